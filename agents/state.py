"""A customer's stored state: the detectors' states together, and its versioned stored form."""

from __future__ import annotations

import struct
import zlib
from datetime import datetime, timedelta
from typing import NamedTuple

import msgspec

from hitrun.agents import identity, retention, unpaid
from hitrun.agents.identity import IdentityState, LinkPolicy
from hitrun.agents.policy import Policies
from hitrun.agents.retention import RetentionPolicy, RetentionState
from hitrun.agents.unpaid import UnpaidState
from hitrun.streams.clock import to_micros


class CustomerState(msgspec.Struct, gc=False, omit_defaults=True):
    """Everything hitrun remembers of one customer: one part per detector.

    The state types are msgspec Structs: written and read about twice as fast
    as dataclasses (docs/performance.md). They hold no reference cycles, so the
    garbage collector does not track them (`gc=False`): a worker keeps
    thousands of decoded states between batches.
    """

    unpaid: UnpaidState = msgspec.field(default_factory=UnpaidState)
    retention: RetentionState = msgspec.field(default_factory=RetentionState)
    # Its hashed identifiers and linked accounts (agents/identity.py); None while
    # there are none, and then left out of the stored form (`encode_state`).
    identity: IdentityState | None = None

    def is_empty(self) -> bool:
        return (
            self.unpaid.is_empty()
            and self.retention.is_empty()
            and (self.identity is None or self.identity.is_empty())
        )

    def links(self) -> IdentityState:
        """The identity part, created when first needed."""
        if self.identity is None:
            self.identity = IdentityState()
        return self.identity

    def tidy(self) -> None:
        """Drop an identity part that holds nothing."""
        if self.identity is not None and self.identity.is_empty():
            self.identity = None


def next_wake(
    state: CustomerState,
    policies: Policies,
    retention_policy: RetentionPolicy,
    lateness: timedelta,
    link_policy: LinkPolicy | None = None,
    after: datetime | None = None,
) -> datetime | None:
    """When the customer's timers must next run on the stream clock (retention's `lateness` later);
    with `after`, the first of them after it (those up to it wait for link reports).

    The unpaid detector's clean-ups (ids past the dedupe window, strikes past
    their window) wake the customer only when nothing else is due: otherwise
    they wait for the customer's next event or timer, which prunes up to the
    stream clock first (`unpaid.next_cleanup` says why that is the same).
    Every paid order would else cost a wake-up of its own a week later, for a
    customer whose retention window is still open. Likewise a retention window
    closing on two or more purchases waits for the end of the dormancy it starts
    (`retention.next_wake`). A strong link whose evidence
    ages out wakes the customer (the unlink is an alert).
    """
    due = unpaid.next_timer(state.unpaid, policies, after=after)
    kept = retention.next_wake(state.retention, retention_policy)
    if (
        kept is not None
        and (after is None or kept + lateness > after)
        and (due is None or kept + lateness < due)
    ):
        due = kept + lateness
    if link_policy is not None and state.identity is not None and state.identity.links:
        unlink = identity.next_expiry(state.identity, link_policy, after)
        if unlink is not None and (due is None or unlink < due):
            due = unlink
    if due is None:
        cleanup = unpaid.next_cleanup(state.unpaid, policies)
        return cleanup if after is None or cleanup is None or cleanup > after else None
    return due


def as_of(
    state: CustomerState,
    customer_id: str,
    now: datetime,
    policies: Policies,
    retention_policy: RetentionPolicy,
    lateness: timedelta,
) -> None:
    """Bring a copy of the stored state to the stream clock `now`, for showing it.

    Steps that publish nothing wait for the customer's next event or timer
    (`next_wake`): the unpaid clean-ups, and a retention window closing on two
    or more purchases. A view of the stored state would show them pending, with
    their due time in the past. Every step that publishes has fired by `now`
    (retention's `lateness` after its due time), so this changes what is shown
    only by those silent steps; whatever it would publish is dropped.
    """
    unpaid.prune(state.unpaid, now, policies)
    retention.advance(state.retention, customer_id, now - lateness, retention_policy)


# The stored form of a state, by version. The first byte tells them apart:
# version 1 is the JSON object earlier revisions wrote with orjson (with an
# "unpaid" and a "retention" part, or, before the retention detector, the
# unpaid part alone); version 2 is a fixed-size summary (below) followed by
# the same JSON written by msgspec, leaving out each field that holds its
# default (an empty list, None, 0: most of a state), which reads back as that
# default; revisions before that wrote every field, and read both forms too.
# Every version stays readable; only the latest is written.
#
# The summary is what rebuilding the deadline index after an assignment needs,
# readable without decoding the state: when the customer next wakes (epoch
# microseconds, -1 for never) under the policies whose fingerprint follows,
# how many orders are open and whether the customer is on a blacklist.
STATE_VERSION = 2
_SUMMARY = struct.Struct(">BqIIB")
SUMMARY_BYTES = _SUMMARY.size
_ENCODER = msgspec.json.Encoder()
# Version 2's body is version 1's JSON: one decoder reads both. Version 1's
# older shape (the unpaid part alone) is told apart by the first field orjson wrote.
_DECODE = msgspec.json.Decoder(CustomerState).decode
_DECODE_V1_UNPAID_ONLY = msgspec.json.Decoder(UnpaidState).decode
_VERSION_2 = bytes([STATE_VERSION])
# The fingerprint of a summary written without one: it matches no policies.
NO_FINGERPRINT = 0


class StateFormatError(ValueError):
    """A stored state that no known version decodes."""


class Summary(NamedTuple):
    """What a stored state says about itself without being decoded."""

    wake: int | None  # epoch microseconds
    fingerprint: int
    open_orders: int
    listed: bool


def policy_fingerprint(*policies: object) -> int:
    """A number that changes when any of the policies a wake time depends on changes."""
    return zlib.crc32(repr(policies).encode()) or 1


def encode_state(
    state: CustomerState, wake: datetime | None = None, fingerprint: int = NO_FINGERPRINT
) -> bytes:
    """The stored form of the state (the latest version), with its summary.

    `wake` is `next_wake` of the state under the policies `fingerprint` stands for.
    """
    header = _SUMMARY.pack(
        STATE_VERSION,
        -1 if wake is None else to_micros(wake),
        fingerprint,
        len(state.unpaid.open),
        bool(state.unpaid.listings),
    )
    return header + _ENCODER.encode(state)


def snapshot(state: CustomerState) -> bytes:
    """The state as it is now, for `from_snapshot` to put back: kept in memory only, so
    without the stored form's summary (half the cost of `encode_state`)."""
    return _ENCODER.encode(state)


def from_snapshot(data: bytes) -> CustomerState:
    """The state a `snapshot` was taken of."""
    return _DECODE(data)


# A stored value (a customer's or an identifier's state) may carry a stamp in front of
# it: the id of its partition's batch that wrote it (agents/customer.py,
# `PartitionTimers.write_record`). After a worker died while its batch's records
# were on their way, the stamps tell which states hold that batch and which do not.
_STAMP = struct.Struct(">BQ")
_STAMPED = b"\xb5"


def stamped(batch: int, value: bytes) -> bytes:
    """`value` stamped with the id of the batch writing it."""
    return _STAMP.pack(_STAMPED[0], batch) + value


def stamp_of(data: bytes) -> int:
    """The batch id a stored value is stamped with (0: none)."""
    if data[:1] != _STAMPED or len(data) < _STAMP.size:
        return 0
    return int(_STAMP.unpack_from(data)[1])


def unstamped(data: bytes) -> memoryview:
    """A stored value without its stamp (if any)."""
    view = memoryview(data)
    return view[_STAMP.size :] if data[:1] == _STAMPED else view


def stored_summary(data: bytes) -> Summary | None:
    """The summary of a stored state; None for a form without one (version 1)."""
    view = unstamped(data)
    if view[:1] != _VERSION_2 or len(view) < _SUMMARY.size:
        return None
    _, wake, fingerprint, open_orders, listed = _SUMMARY.unpack_from(view)
    return Summary(None if wake < 0 else wake, fingerprint, open_orders, bool(listed))


def decode_state(data: bytes, customer_id: str | None = None) -> CustomerState:
    """The state from its stored form, whichever version wrote it, stamped or not;
    `customer_id` names it in the error."""
    view = unstamped(data)
    try:
        if view[:1] == _VERSION_2:
            return _DECODE(view[_SUMMARY.size :])
        if view[:10].tobytes() == b'{"unpaid":':
            return _DECODE(view)
        if view[:8].tobytes() == b'{"open":':
            return CustomerState(_DECODE_V1_UNPAID_ONLY(view))
        raise StateFormatError(f"unknown format (first byte {bytes(view[:1])!r})")
    except (msgspec.DecodeError, msgspec.ValidationError, StateFormatError) as exc:
        raise StateFormatError(
            f"the stored state of customer {customer_id or '(unknown)'} cannot be decoded: {exc}"
        ) from None
