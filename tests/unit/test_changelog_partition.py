"""A customer's changelog record goes to the customer's partition, chosen without the producer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hitrun.agents.customer import customers_table
from hitrun.streams.app import settings
from hitrun.streams.partitioning import partition_for_key


@given(st.text(min_size=1, max_size=40))
def test_the_changelog_partition_of_a_customer_is_the_partition_its_events_meet_in(
    customer_id: str,
) -> None:
    key = customer_id.encode()
    # None would leave the choice to the producer, which partitions from its
    # cached topic metadata and raised when that lacked the changelog topic.
    assert customers_table.partition_for_key(key) == partition_for_key(key, settings.partitions)


def test_the_changelog_partition_needs_no_stream_event_or_producer() -> None:
    # Outside any stream iteration and before any producer exists.
    assert isinstance(customers_table.partition_for_key(b"c0000001"), int)
