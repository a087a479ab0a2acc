"""The one orjson codec: encodes records and decodes + validates input messages into records."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import fastjsonschema
import msgspec
import orjson

from hitrun.schemas import compiled_validator, wire
from hitrun.schemas.records import INPUT_EVENTS, InputEvent, Watermark
from hitrun.streams.errors import (
    KeyMismatch,
    MissingKey,
    NotAnObject,
    NotJson,
    Oversized,
    SchemaViolation,
    TimestampWithoutOffset,
    Undecodable,
    UnknownEventType,
    WrongTopic,
)

# A date-time that is otherwise well formed but carries no offset: refused with
# its own reason, because guessing a zone would shift every deadline.
_NAIVE_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")

_VALIDATORS = {name: compiled_validator(schema) for name, (_, schema) in INPUT_EVENTS.items()}


def encode(value: Any) -> bytes:
    """Serialize a record (dataclass or msgspec Struct), dict or list to compact JSON bytes."""
    return orjson.dumps(value, default=msgspec.to_builtins)


def decode_json(data: bytes) -> Any:
    """Parse JSON bytes; raises `orjson.JSONDecodeError`."""
    return orjson.loads(data)


def decode_input(
    value: bytes | None,
    key: bytes | None,
    accepted_types: frozenset[str],
    max_bytes: int,
) -> InputEvent:
    """Decode and validate one input message into its record, or raise an `InputRejected`.

    The typed decoder (`hitrun.schemas.wire`) takes what it accepts in one pass;
    anything else goes through the JSON Schema validator, whose checks run from
    cheapest to dearest and name each failure's own reason.
    """
    if value is None:
        raise NotJson("the record has no value (a tombstone)")
    if len(value) > max_bytes:
        raise Oversized(f"{len(value)} bytes exceeds the limit of {max_bytes}")
    try:
        record = wire.decode(value)
    except wire.Refused:
        record = _checked(value, accepted_types)
    else:
        if record.type not in accepted_types:
            record = _checked(value, accepted_types)
    if type(record) is not Watermark:
        _check_key(key, record.customer_id)
    return record


def _checked(value: bytes, accepted_types: frozenset[str]) -> InputEvent:
    """The schema validator's path: what the typed decoder refused, accepted or explained."""
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        # orjson refuses invalid UTF-8 with the same exception type; tell the two apart.
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise Undecodable(f"not UTF-8: {uexc.reason} at byte {uexc.start}") from None
        raise NotJson(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise NotAnObject(f"expected a JSON object, got {type(body).__name__}")
    event_type = body.get("type")
    if not isinstance(event_type, str) or event_type not in INPUT_EVENTS:
        raise UnknownEventType(f"unknown event type {event_type!r}")
    if event_type not in accepted_types:
        raise WrongTopic(f"{event_type} does not belong on this topic")
    _check_offsets(body)
    try:
        _VALIDATORS[event_type](body)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise SchemaViolation(f"{exc.message} (at {exc.name})") from None
    record_cls = INPUT_EVENTS[event_type][0]
    try:
        record = record_cls.from_dict(whole_numbers(body))
    except ValueError as exc:
        # The pattern admits impossible dates such as 2026-02-30.
        raise SchemaViolation(f"invalid date-time: {exc}") from None
    return record


def whole_numbers(value: Any) -> Any:
    """The body with every integral float (`2.0`) as an int.

    JSON Schema counts 2.0 as an integer, so the schema accepts it where an
    integer is meant; the typed decoder does not, and sends it here. Every
    number of an input event is an integer, so the record gets ints only.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


def _check_offsets(body: Mapping[str, Any]) -> None:
    for name in ("occurred_at", "payment_due_at"):
        text = body.get(name)
        if isinstance(text, str) and _NAIVE_TIMESTAMP.match(text):
            raise TimestampWithoutOffset(f"{name}={text!r} has no UTC offset")


def _check_key(key: bytes | None, customer_id: str) -> None:
    if key is None:
        raise MissingKey("input records must be keyed by customer_id")
    if key != customer_id.encode():
        shown = key[:64].decode("utf-8", "replace")
        raise KeyMismatch(f"key {shown!r} != customer_id {customer_id!r}")
