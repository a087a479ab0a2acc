"""The partition of each key of the customers table: its changelog and store partition."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

import hitrun.agents.customer as customer
from hitrun.schemas.registry import load_schema
from hitrun.streams.partitioning import partition_for_key

PARTITIONS = customer.settings.partitions
table = customer.customers_table

# Customer ids as the wire contract allows them: no whitespace of any kind.
IDENTIFIER_PATTERN = re.compile(load_schema("common.v1")["$defs"]["identifier"]["pattern"])
customer_ids = st.text(
    st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=40
).filter(lambda text: IDENTIFIER_PATTERN.search(text) is not None)


@given(customer_ids)
def test_a_customer_key_goes_where_the_customers_events_go(customer_id: str) -> None:
    key = customer_id.encode()
    assert table.partition_for_key(key) == partition_for_key(key, PARTITIONS)


@given(st.integers(min_value=0, max_value=PARTITIONS - 1))
def test_a_clock_record_goes_to_its_own_partition(number: int) -> None:
    assert table.partition_for_key(customer.clock_key(number)) == number


@given(customer_ids)
def test_an_identifier_state_goes_where_its_identifier_topic_record_goes(identifier: str) -> None:
    key = customer.IDENTITY_KEY_PREFIX + identifier.encode()
    assert table.partition_for_key(key) == partition_for_key(identifier.encode(), PARTITIONS)


def test_the_internal_prefixes_hold_a_space_which_no_customer_id_holds() -> None:
    # partition_for_key takes a key without a space for a customer's, unlooked at.
    for prefix in (customer.CLOCK_KEY_PREFIX, customer.IDENTITY_KEY_PREFIX):
        assert b" " in prefix
        assert IDENTIFIER_PATTERN.search(prefix.decode() + "x") is None


def test_any_other_key_with_a_space_is_hashed_whole() -> None:
    key = b"not a customer"
    assert table.partition_for_key(key) == partition_for_key(key, PARTITIONS)
