"""The stored form of a customer's state: the latest version round-trips, every older one
is read, and a state nothing reads is an error naming the customer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from hitrun.agents.state import (
    STATE_VERSION,
    SUMMARY_BYTES,
    CustomerState,
    StateFormatError,
    decode_state,
    stamp_of,
    stamped,
    stored_summary,
)
from hitrun.agents.state import encode_state as encode
from tests.unit.events import as_version_1

# Customer states as the revision before the versioned codec wrote them to the
# changelog (orjson's JSON of the dataclasses), from simulated traffic: open and
# expired orders, strikes, blacklistings, offences, retention windows with traits.
WRITTEN_BY_VERSION_1 = [
    (key, value.encode())
    for key, value in map(
        orjson.loads, (Path(__file__).parent / "data" / "states-v1.jsonl").read_bytes().splitlines()
    )
]


def test_the_recorded_changelog_covers_every_part_of_the_state() -> None:
    states = [decode_state(value, key) for key, value in WRITTEN_BY_VERSION_1]
    assert all(
        any(getattr(s.unpaid, part) for s in states)
        for part in ("open", "expired", "strikes", "listings", "offences", "seen", "closed")
    )
    assert any(s.retention.traits for s in states)
    assert any(s.retention.purchases for s in states)


@pytest.mark.parametrize("key,value", WRITTEN_BY_VERSION_1[:60] + WRITTEN_BY_VERSION_1[-60:])
def test_a_state_written_by_version_1_is_read_without_losing_anything(
    key: str, value: bytes
) -> None:
    state = decode_state(value, key)
    # Written again the way version 1 wrote it, it is the same bytes: nothing was
    # dropped, no time lost its offset, no number changed its type (the identity
    # part came later: a state without one has it empty, and so has a listing its
    # links: `linked_to`, `linked_evidence`, `reason`, and the unpaid part its listings
    # through links set aside, `waiting`, and its ended ones, `ended`, and the digests of
    # the events it has seen, `digests`).
    assert state.identity is None
    later = b',"linked_to":null,"linked_evidence":[],"reason":null}'
    written = (
        as_version_1(state)
        .replace(later, b"}")
        .replace(b',"waiting":{},"ended":{}', b"")
        .replace(b',"digests":{}', b"")
    )
    assert written == value[:-1] + b',"identity":null}'
    assert decode_state(encode(state)) == state


def test_every_recorded_state_reads_the_same_from_both_versions() -> None:
    for key, value in WRITTEN_BY_VERSION_1:
        state = decode_state(value, key)
        again = encode(state)
        assert again[0] == STATE_VERSION
        assert decode_state(again, key) == state
        # No larger, but for the summary and the two link fields every listing gained.
        links = len(b',"linked_to":null,"linked_evidence":[]') * len(state.unpaid.listings)
        assert len(again) <= len(value) + SUMMARY_BYTES + links


def test_version_2_with_every_field_written_reads_the_same() -> None:
    # Revisions before the defaults were left out wrote every field after the summary.
    for key, value in WRITTEN_BY_VERSION_1:
        state = decode_state(value, key)
        short = encode(state)
        full = short[:SUMMARY_BYTES] + as_version_1(state)
        assert b'"strikes":[]' not in short and b'"expired":{}' not in short  # left out
        assert decode_state(full, key) == decode_state(short, key) == state
        assert stored_summary(full) == stored_summary(short)


def test_the_state_before_the_retention_detector_is_read_as_its_unpaid_part() -> None:
    key, value = next((k, v) for k, v in WRITTEN_BY_VERSION_1 if b'"strikes":[{' in v)
    unpaid_only = orjson.dumps(orjson.loads(value)["unpaid"])
    state = decode_state(unpaid_only, key)
    assert state.unpaid == decode_state(value, key).unpaid
    assert state.retention.is_empty()


@pytest.mark.parametrize(
    "stored",
    [
        b"",
        b"garbage",
        bytes([STATE_VERSION]) + b"{not json",
        bytes([STATE_VERSION]) + b'{"unpaid": 3}',
        bytes([STATE_VERSION + 1]) + b"{}",
        b'{"unpaid": {"open": []}}',
        b'{"something": "else"}',
    ],
)
def test_a_state_no_version_reads_is_an_error_that_names_the_customer(stored: bytes) -> None:
    with pytest.raises(StateFormatError, match="customer cust-77"):
        decode_state(stored, "cust-77")


def test_a_stamped_state_reads_as_itself_and_tells_its_batch() -> None:
    # Stamped with the batch that wrote it (agents/customer.py, `write_record`): every
    # reader strips the stamp, of the current version and of version 1 alike.
    for key, value in WRITTEN_BY_VERSION_1[:40]:
        state = decode_state(value, key)
        current = encode(state)
        for written in (current, value):
            assert decode_state(stamped(2**40 + 7, written), key) == state
        assert stamp_of(stamped(2**40 + 7, current)) == 2**40 + 7
        assert stored_summary(stamped(9, current)) == stored_summary(current) is not None
        assert stamp_of(current) == stamp_of(value) == 0


def test_the_empty_state_round_trips() -> None:
    assert decode_state(encode(CustomerState())) == CustomerState()


def test_the_wake_policy_fingerprint_is_the_same_in_every_process() -> None:
    # A restarted worker trusts the stored summaries only under the same fingerprint;
    # one that changed with the hash seed would decode every state at each start.
    seen = set()
    for seed in ("3", "4"):
        printed = subprocess.run(
            [sys.executable, "-c", "from hitrun.agents.customer import WAKE_POLICY as w; print(w)"],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        seen.add(printed.stdout.strip())
    assert len(seen) == 1
