"""Sorts each raw input message: accept it, reroute it to its customer's partition, or refuse it."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import final

import msgspec
import orjson

from hitrun.schemas.records import (
    AdminActionRequested,
    DeadLetter,
    InputEvent,
    SourceCoordinates,
    Watermark,
    parse_timestamp,
)
from hitrun.streams.auth import verify_command
from hitrun.streams.codec import decode_input
from hitrun.streams.errors import InputRejected, Misrouted, Unauthenticated
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.watermarks import verify

# Header carrying where a rerouted message was first read, so that a later dead
# letter still points at the producer's original record.
ORIGIN_HEADER = "hitrun-origin"

Headers = Sequence[tuple[str, bytes]]


class RawMessage(msgspec.Struct, frozen=True):
    """One record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@final
class Accepted(msgspec.Struct, frozen=True):
    event: InputEvent


@final
class Reroute(msgspec.Struct, frozen=True):
    """Send the original bytes to `partition` of the reroute topic, remembering the origin."""

    partition: int
    headers: Headers
    # The event's time: how far its source partition has been read (streams/progress.py).
    at: datetime


@final
class Rejected(msgspec.Struct, frozen=True):
    dead_letter: DeadLetter


Verdict = Accepted | Reroute | Rejected


REROUTABLE_TYPES = frozenset(
    {"checkout_confirmed", "payment_attempted", "order_status_changed", "inquiry_received"}
)


@dataclass(frozen=True, slots=True)
class IngestRules:
    """What the ingest needs to know: which types each topic carries and the limits."""

    accepted_types: Mapping[str, frozenset[str]]
    reroute_topic: str
    partitions: int
    max_message_bytes: int
    # The key watermarks must be signed with (None: every watermark is refused).
    watermark_key: bytes | None = None
    # The key admin commands must be signed with (None: every command is refused),
    # and the longest a signed command may stay valid.
    admin_key: bytes | None = None
    admin_ttl: timedelta = timedelta(minutes=15)
    # The reroute topic carries only what hitrun itself reroutes: the shop's events.
    reroutable_types: frozenset[str] = REROUTABLE_TYPES


def classify(msg: RawMessage, rules: IngestRules) -> Verdict:
    """Decide what happens to one raw message. Never raises for bad input."""
    rerouted = msg.topic == rules.reroute_topic
    accepted = rules.reroutable_types if rerouted else rules.accepted_types.get(msg.topic)
    try:
        event = decode_input(msg.value, msg.key, accepted or frozenset(), rules.max_message_bytes)
        if type(event) is Watermark:
            # A watermark speaks for the partition it was written to: no customer, no reroute.
            refused = verify(
                rules.watermark_key,
                msg.topic,
                msg.partition,
                event.occurred_at,
                event.source,
                event.signature,
            )
            if refused is not None:
                raise Unauthenticated(refused)
            return Accepted(event)
        if type(event) is AdminActionRequested:
            refused = verify_command(
                rules.admin_key, msg.value or b"", rules.admin_ttl, parse_timestamp
            )
            if refused is not None:
                raise Unauthenticated(refused)
        # decode_input has checked that the key is the customer id.
        home = partition_for_key(event.customer_id.encode(), rules.partitions)
        if home != msg.partition:
            if isinstance(event, AdminActionRequested):
                raise Misrouted(
                    f"an admin command for partition {home} written to partition "
                    f"{msg.partition}; admin commands are not rerouted: key them by customer id "
                    "with Kafka's default (murmur2) partitioner, as `hitrun admin` does"
                )
            if rerouted:
                raise Misrouted(
                    f"rerouted to partition {msg.partition} but the key belongs in {home}; "
                    "do all co-partitioned topics have the same partition count?"
                )
            return Reroute(home, _with_origin(msg), event.occurred_at)
    except InputRejected as exc:
        return Rejected(dead_letter_for(msg, exc))
    return Accepted(event)


def origin_of(msg: RawMessage) -> SourceCoordinates:
    """Where the message was first read: its own coordinates, or its origin header if rerouted.

    Only hitrun's own reroute writes that header, but any producer can set
    one: a header that is not [topic, partition, offset, timestamp] with
    those types is ignored, and the message's own coordinates are used.
    """
    for name, value in msg.headers:
        if name == ORIGIN_HEADER:
            origin = _parse_origin(value)
            if origin is not None:
                return origin
    return SourceCoordinates(msg.topic, msg.partition, msg.offset, msg.timestamp_ms)


def _parse_origin(value: bytes | None) -> SourceCoordinates | None:
    try:
        parsed = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, list) or len(parsed) != 4:
        return None
    topic, partition, offset, timestamp = parsed
    ints = (partition, offset)
    if (
        not isinstance(topic, str)
        or not topic
        or not all(type(n) is int and 0 <= n < 2**63 for n in ints)
        or not (timestamp is None or (type(timestamp) is int and 0 <= timestamp < 2**63))
    ):
        return None
    return SourceCoordinates(topic, partition, offset, timestamp)


def _with_origin(msg: RawMessage) -> Headers:
    origin = origin_of(msg)
    encoded = orjson.dumps([origin.topic, origin.partition, origin.offset, origin.timestamp_ms])
    return (*[(n, v) for n, v in msg.headers if n != ORIGIN_HEADER], (ORIGIN_HEADER, encoded))


def dead_letter_for(msg: RawMessage, error: InputRejected) -> DeadLetter:
    """The dead-letter record for `msg`: original bytes, origin and a stable reason code."""
    origin = origin_of(msg)
    identity = f"{origin.topic}\0{origin.partition}\0{origin.offset}".encode()
    return DeadLetter(
        dead_letter_id=hashlib.blake2b(identity, digest_size=16).hexdigest(),
        reason=error.reason,
        detail=error.detail[:2048],
        source=origin,
        key_b64=_b64(msg.key),
        value_b64=_b64(msg.value),
    )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
