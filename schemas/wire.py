"""Typed decoding of input messages: the JSON Schemas as msgspec types, one pass from bytes.

Each input event type is a msgspec Struct tagged by its `type` field, with the
schema's constraints (required fields, no unknown fields, patterns, lengths,
ranges, enums) as type annotations; the shared ones (identifier, timestamp,
money, time zone) are read from `common.v1.schema.json` itself. Two patterns
are checked here instead of by msgspec, which calls a pattern through a slow
generic call: an identifier's (no whitespace) in `decode`, a timestamp's in
`_time`. Decoding builds the core's records (`hitrun.schemas.records`) directly.

The JSON Schemas stay the contract. This decoder is the fast path: it may
refuse a message the schemas would accept (the caller then runs the schema
validator, which decides and explains), but it must never accept one they
refuse; tests/unit/test_wire_contract.py holds both to the same verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any, Literal, TypeAlias, cast

import msgspec

from hitrun.schemas.records import (
    EARLIEST_TIME,
    LATEST_TIME,
    AdminActionRequested,
    CheckoutConfirmed,
    Identifiers,
    InputEvent,
    InquiryReceived,
    Item,
    Money,
    OrderStatusChanged,
    PaymentAttempted,
    Watermark,
    identifiers_of,
)
from hitrun.schemas.registry import load_schema

_COMMON = load_schema("common.v1")["$defs"]


def _pattern(pattern: str) -> str:
    """A JSON Schema (ECMA-262) pattern for Python's `re`: there `$` also matches before a
    final newline, which the schema's `$` does not."""
    return (
        pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    )


def _meta(definition: dict[str, Any], checked_here: str | None = None) -> msgspec.Meta:
    """A string definition of the schema (length and pattern) as msgspec constraints; with
    `checked_here`, its pattern is left to this module, and the mark says so."""
    pattern = None if checked_here else definition.get("pattern")
    return msgspec.Meta(
        min_length=definition.get("minLength"),
        max_length=definition.get("maxLength"),
        pattern=None if pattern is None else _pattern(pattern),
        extra=None if checked_here is None else {checked_here: True},
    )


def _text(max_length: int, min_length: int | None = None) -> msgspec.Meta:
    return msgspec.Meta(min_length=min_length, max_length=max_length)


_MONEY = _COMMON["money"]["properties"]
_SIGNATURE = load_schema("watermark.v1")["properties"]["signature"]

# An identifier's pattern allows anything but whitespace. msgspec calls a pattern's search
# method through a generic call, about 4,400 instructions a field (callgrind), and an event has
# four to ten identifiers: that pattern is checked by `decode` instead (`_NO_SPACE` marks the
# fields), and only for a message whose bytes could put whitespace in a string at all.
_ANY_BUT_WHITESPACE = r"^[^\s]+$"
_NO_SPACE = "hitrun: no whitespace"
_IDENTIFIER = _COMMON["identifier"]
Identifier: TypeAlias = Annotated[
    str,
    _meta(_IDENTIFIER, _NO_SPACE if _IDENTIFIER["pattern"] == _ANY_BUT_WHITESPACE else None),
]
# A timestamp's pattern is checked by `_time`, which every timestamp field is read through,
# for the same reason (`_TIMESTAMP` marks the fields, for the tests).
_TIMESTAMP = "hitrun: read by _time"
_TIMESTAMP_PATTERN = re.compile(_pattern(_COMMON["timestamp"]["pattern"]))
Timestamp: TypeAlias = Annotated[str, _meta(_COMMON["timestamp"], _TIMESTAMP)]
TimeZone: TypeAlias = Annotated[str, _meta(_COMMON["time_zone"])]
Currency: TypeAlias = Annotated[str, _meta(_MONEY["currency"])]
Signature: TypeAlias = Annotated[str, _meta(_SIGNATURE)]
AmountMinor: TypeAlias = Annotated[
    int, msgspec.Meta(ge=_MONEY["amount_minor"]["minimum"], le=_MONEY["amount_minor"]["maximum"])
]
Method: TypeAlias = Literal[
    "card", "e_wallet", "bank_transfer", "virtual_account", "convenience_store", "cash_on_delivery"
]


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    pass


class _Money(_Wire, frozen=True, forbid_unknown_fields=True, tag=None):
    amount_minor: AmountMinor
    currency: Currency


class _Item(_Wire, frozen=True, forbid_unknown_fields=True, tag=None):
    sku: Identifier
    category: Annotated[str, _text(64, 1)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    unit_price_minor: AmountMinor
    accessory: bool = False


IdentifierHash: TypeAlias = Annotated[str, _meta(_COMMON["identifier_hash"])]


class _Identifiers(_Wire, frozen=True, forbid_unknown_fields=True, tag=None):
    phone: IdentifierHash | None = None
    email: IdentifierHash | None = None
    device: IdentifierHash | None = None
    payment_instrument: IdentifierHash | None = None
    shipping_address: IdentifierHash | None = None


class _Checkout(_Wire, frozen=True, forbid_unknown_fields=True, tag="checkout_confirmed"):
    event_id: Identifier
    customer_id: Identifier
    shop_id: Identifier
    occurred_at: Timestamp
    order_id: Identifier
    total: _Money
    payment_method: Method
    payment_due_at: Timestamp | None = None
    items: Annotated[list[_Item], msgspec.Meta(max_length=200)] = []
    shipping_address_hash: Annotated[str, _text(128)] | None = None
    customer_address_hash: Annotated[str, _text(128)] | None = None
    traffic_source: (
        Literal["direct", "search", "ad", "social", "email", "referral", "unknown"] | None
    ) = None
    promotion_code: Annotated[str, _text(64)] | None = None
    customer_time_zone: TimeZone | None = None
    identifiers: _Identifiers | None = None


class _Payment(_Wire, frozen=True, forbid_unknown_fields=True, tag="payment_attempted"):
    event_id: Identifier
    customer_id: Identifier
    shop_id: Identifier
    occurred_at: Timestamp
    order_id: Identifier
    status: Literal["succeeded", "failed"]
    amount: _Money
    method: Method
    payment_id: Identifier | None = None
    failure_reason: Annotated[str, _text(256)] | None = None
    identifiers: _Identifiers | None = None


class _OrderStatus(_Wire, frozen=True, forbid_unknown_fields=True, tag="order_status_changed"):
    event_id: Identifier
    customer_id: Identifier
    shop_id: Identifier
    occurred_at: Timestamp
    order_id: Identifier
    status: Literal["cancelled", "paid", "completed", "refunded", "cod_refused"]
    cancelled_by: Literal["buyer", "seller", "system", "logistics"] | None = None
    refund: _Money | None = None
    reason: Annotated[str, _text(256)] | None = None

    # The schema's if/then: a cancellation says who cancelled (not missing, not null).
    def __post_init__(self) -> None:
        if self.status == "cancelled" and self.cancelled_by is None:
            raise ValueError("a cancellation needs cancelled_by")


class _Inquiry(_Wire, frozen=True, forbid_unknown_fields=True, tag="inquiry_received"):
    event_id: Identifier
    customer_id: Identifier
    shop_id: Identifier
    occurred_at: Timestamp
    inquiry_id: Identifier
    product_id: Identifier | None = None
    channel: Literal["chat", "email", "phone", "form", "marketplace"] | None = None


class _Admin(_Wire, frozen=True, forbid_unknown_fields=True, tag="admin_action_requested"):
    event_id: Identifier
    customer_id: Identifier
    shop_id: Identifier
    occurred_at: Timestamp
    action: Literal["blacklist", "unblacklist", "erase"]
    actor: Annotated[str, _text(128, 1)]
    reason: Annotated[str, _text(512, 1)]
    scope: Literal["shop", "platform"] = "shop"
    duration_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None
    note: Annotated[str, _text(512)] | None = None
    signer: Identifier | None = None
    expires_at: Timestamp | None = None
    signature: Signature | None = None


class _Watermark(_Wire, frozen=True, forbid_unknown_fields=True, tag="watermark"):
    occurred_at: Timestamp
    source: Annotated[str, _text(128)] | None = None
    signature: Signature | None = None


_Any = _Checkout | _Payment | _OrderStatus | _Inquiry | _Admin | _Watermark
_DECODER = msgspec.json.Decoder(_Any)

# Every wire type by its tag, for the contract tests.
WIRE_TYPES: dict[str, type[msgspec.Struct]] = {
    str(msgspec.inspect.type_info(t).tag): t  # type: ignore[attr-defined]
    for t in (_Checkout, _Payment, _OrderStatus, _Inquiry, _Admin, _Watermark)
}


class Refused(Exception):
    """The fast path does not accept the message; the schema validator decides why."""


def decode(data: bytes) -> InputEvent:
    """The record for an input message's bytes; raises `Refused` for anything else."""
    try:
        wire = _DECODER.decode(data)
        # Whitespace gets into a JSON string only as a space, an escape or a non-ASCII
        # character (a raw control character is not JSON): bytes with none of them need
        # no look at the identifiers. (`find`, since `in` on bytes tries the needle as an
        # integer first and formats the TypeError it raises.)
        if not (data.isascii() and data.find(b" ") < 0 and data.find(b"\\") < 0) and _spaced(
            wire, _SPACE_CHECKS[type(wire)]
        ):
            raise Refused
        return _RECORDS[type(wire)](wire)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, OverflowError):
        raise Refused from None


_WHITESPACE = re.compile(r"\s")

# Per struct type, the fields to look at for whitespace: (name, None) for an identifier, or
# (name, checks) for a struct (or list of structs) holding some, by the checks of its type.
_Checks: TypeAlias = tuple[tuple[str, "_Checks | None"], ...]


def _checks_of(info: msgspec.inspect.StructType) -> _Checks:
    found: list[tuple[str, _Checks | None]] = []
    for f in info.fields:
        kinds = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        for kind in kinds:
            if isinstance(kind, msgspec.inspect.ListType):
                kind = kind.item_type
            if isinstance(kind, msgspec.inspect.Metadata) and _NO_SPACE in (kind.extra or {}):
                found.append((f.name, None))
            elif isinstance(kind, msgspec.inspect.StructType) and (inner := _checks_of(kind)):
                found.append((f.name, inner))
    return tuple(found)


def _spaced(struct: object, checks: _Checks) -> bool:
    """Does an identifier of `struct` (or of a struct it holds) contain whitespace?"""
    for name, inner in checks:
        value = getattr(struct, name)
        items = value if isinstance(value, list) else (value,)
        for item in items:
            if item is None:
                continue
            if inner is None:
                if _WHITESPACE.search(item):
                    return True
            elif _spaced(item, inner):
                return True
    return False


_SPACE_CHECKS: dict[type, _Checks] = {
    t: _checks_of(cast(msgspec.inspect.StructType, msgspec.inspect.type_info(t)))
    for t in (_Checkout, _Payment, _OrderStatus, _Inquiry, _Admin, _Watermark)
}


# Each parse of an offset other than UTC makes a timezone object of its own, and two
# aware datetimes compare and subtract quickly only when they share one (otherwise
# both offsets are computed each time, about 15 times slower): a shop's times meet
# in the reorder buffer, the detectors and the deadline index. Every time parsed here
# gets the one object of its offset that msgspec's decoding (the stored states) gives
# (msgspec keeps one per offset in a cache of its own; should it replace one, the
# comparisons are only slower again).
_ZONES: dict[tzinfo, tzinfo] = {}


def shared_zone(zone: tzinfo) -> tzinfo:
    """The one timezone object kept for `zone`'s offset (at most one per offset)."""
    found = _ZONES.get(zone)
    if found is None:
        sample = datetime(2000, 1, 1, tzinfo=zone).isoformat()
        try:
            found = msgspec.convert(sample, datetime).tzinfo or zone
        except msgspec.ValidationError:  # an offset msgspec does not read (seconds)
            found = zone
        _ZONES[zone] = found
    return found


def _time(text: str) -> datetime:
    if _TIMESTAMP_PATTERN.match(text) is None:
        raise ValueError(text)
    # The pattern guarantees an RFC 3339 date-time with an offset in the years
    # 1970-2199; the date may still be impossible (ValueError), and only those
    # two years' offsets can put it outside the supported range.
    moment = datetime.fromisoformat(text)
    zone = moment.tzinfo
    if zone is not UTC and zone is not None:
        shared = shared_zone(zone)
        if shared is not zone:
            moment = moment.replace(tzinfo=shared)
    if text.startswith(("1970", "2199")) and not (
        EARLIEST_TIME <= moment.astimezone(UTC) < LATEST_TIME
    ):
        raise ValueError(text)
    return moment


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else _time(text)


def _identifiers(w: _Identifiers | None) -> Identifiers:
    return None if w is None else identifiers_of(msgspec.structs.asdict(w))


def _money(m: _Money) -> Money:
    return Money(m.amount_minor, m.currency)


# Each record gets its fields as keywords, the common ones too: a dict of them unpacked
# into the constructor (`**common`) took about 760 instead of 120 ns a record.
def _checkout(w: _Checkout) -> CheckoutConfirmed:
    return CheckoutConfirmed(
        event_id=w.event_id,
        customer_id=w.customer_id,
        shop_id=w.shop_id,
        occurred_at=_time(w.occurred_at),
        order_id=w.order_id,
        total=_money(w.total),
        payment_method=w.payment_method,
        payment_due_at=_optional_time(w.payment_due_at),
        items=tuple(
            Item(i.sku, i.category, i.quantity, i.unit_price_minor, i.accessory) for i in w.items
        ),
        shipping_address_hash=w.shipping_address_hash,
        customer_address_hash=w.customer_address_hash,
        traffic_source=w.traffic_source,
        promotion_code=w.promotion_code,
        customer_time_zone=w.customer_time_zone,
        identifiers=_identifiers(w.identifiers),
    )


def _payment(w: _Payment) -> PaymentAttempted:
    return PaymentAttempted(
        event_id=w.event_id,
        customer_id=w.customer_id,
        shop_id=w.shop_id,
        occurred_at=_time(w.occurred_at),
        order_id=w.order_id,
        status=w.status,
        amount=_money(w.amount),
        method=w.method,
        payment_id=w.payment_id,
        failure_reason=w.failure_reason,
        identifiers=_identifiers(w.identifiers),
    )


def _order_status(w: _OrderStatus) -> OrderStatusChanged:
    return OrderStatusChanged(
        event_id=w.event_id,
        customer_id=w.customer_id,
        shop_id=w.shop_id,
        occurred_at=_time(w.occurred_at),
        order_id=w.order_id,
        status=w.status,
        cancelled_by=w.cancelled_by,
        refund=None if w.refund is None else _money(w.refund),
        reason=w.reason,
    )


def _inquiry(w: _Inquiry) -> InquiryReceived:
    return InquiryReceived(
        event_id=w.event_id,
        customer_id=w.customer_id,
        shop_id=w.shop_id,
        occurred_at=_time(w.occurred_at),
        inquiry_id=w.inquiry_id,
        product_id=w.product_id,
        channel=w.channel,
    )


def _admin(w: _Admin) -> AdminActionRequested:
    return AdminActionRequested(
        event_id=w.event_id,
        customer_id=w.customer_id,
        shop_id=w.shop_id,
        occurred_at=_time(w.occurred_at),
        action=w.action,
        actor=w.actor,
        reason=w.reason,
        scope=w.scope,
        duration_days=w.duration_days,
        note=w.note,
        signer=w.signer,
        expires_at=_optional_time(w.expires_at),
    )


def _watermark(w: _Watermark) -> Watermark:
    return Watermark(occurred_at=_time(w.occurred_at), source=w.source, signature=w.signature)


_RECORDS: dict[type[Any], Callable[[Any], InputEvent]] = {
    _Checkout: _checkout,
    _Payment: _payment,
    _OrderStatus: _order_status,
    _Inquiry: _inquiry,
    _Admin: _admin,
    _Watermark: _watermark,
}
