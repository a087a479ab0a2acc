"""Python records that mirror the JSON Schema files; built from already-validated dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, cast, final

import msgspec

PaymentMethod = Literal[
    "card", "e_wallet", "bank_transfer", "virtual_account", "convenience_store", "cash_on_delivery"
]
PaymentStatus = Literal["succeeded", "failed"]
OrderStatus = Literal["cancelled", "paid", "completed", "refunded", "cod_refused"]
CancelledBy = Literal["buyer", "seller", "system", "logistics"]
TrafficSource = Literal["direct", "search", "ad", "social", "email", "referral", "unknown"]


# The event times hitrun accepts: wide enough for any shop's history, narrow
# enough that every deadline and window computed from them (a year or two
# ahead, or back) is a valid datetime, and that no producer can stamp an event
# at the end or the start of time.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def parse_timestamp(text: str) -> datetime:
    """An aware datetime from an RFC 3339 string that the schema already checked for an offset.

    Raises ValueError for an impossible date or one outside [EARLIEST_TIME, LATEST_TIME).
    """
    moment = datetime.fromisoformat(text)
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_TIME <= utc < LATEST_TIME:
        raise ValueError(
            f"{text} is outside the supported range "
            f"[{EARLIEST_TIME.isoformat()}, {LATEST_TIME.isoformat()})"
        )
    return moment


class Money(msgspec.Struct, frozen=True):
    """An amount in integer minor units of a currency."""

    amount_minor: int
    currency: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Money:
        return cls(amount_minor=d["amount_minor"], currency=d["currency"])


class Item(msgspec.Struct, frozen=True):
    """One line of a checkout basket."""

    sku: str
    category: str
    quantity: int
    unit_price_minor: int
    accessory: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        return cls(
            sku=d["sku"],
            category=d["category"],
            quantity=d["quantity"],
            unit_price_minor=d["unit_price_minor"],
            accessory=d.get("accessory", False),
        )


# Hashed identifiers of the buyer (version 2 of checkout_confirmed and
# payment_attempted): kind -> hash, only the kinds given, None when none is.
Identifiers = dict[str, str] | None
IDENTIFIER_KINDS = ("phone", "email", "device", "payment_instrument", "shipping_address")


def identifiers_of(given: dict[str, str | None] | None) -> Identifiers:
    """The canonical form of an `identifiers` object: the kinds given, in a fixed order."""
    if not given:
        return None
    kept = {kind: given[kind] for kind in IDENTIFIER_KINDS if given.get(kind) is not None}
    return cast(dict[str, str], kept) or None


class ShopEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every input event carries (README, "What goes in").

    Input records are msgspec Structs: built once per message, and a frozen
    Struct is built several times faster than a frozen dataclass.
    """

    type: ClassVar[str] = ""
    event_id: str
    customer_id: str
    shop_id: str
    occurred_at: datetime

    @staticmethod
    def _common(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "event_id": d["event_id"],
            "customer_id": d["customer_id"],
            "shop_id": d["shop_id"],
            "occurred_at": parse_timestamp(d["occurred_at"]),
        }


@final
class CheckoutConfirmed(ShopEvent, frozen=True, kw_only=True, tag="checkout_confirmed"):
    """A buyer confirmed an order that now awaits payment."""

    type: ClassVar[str] = "checkout_confirmed"
    order_id: str
    total: Money
    payment_method: PaymentMethod
    payment_due_at: datetime | None = None
    items: tuple[Item, ...] = ()
    shipping_address_hash: str | None = None
    customer_address_hash: str | None = None
    traffic_source: TrafficSource | None = None
    promotion_code: str | None = None
    customer_time_zone: str | None = None
    identifiers: Identifiers = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckoutConfirmed:
        due = d.get("payment_due_at")
        return cls(
            **cls._common(d),
            order_id=d["order_id"],
            total=Money.from_dict(d["total"]),
            payment_method=d["payment_method"],
            payment_due_at=parse_timestamp(due) if due is not None else None,
            items=tuple(Item.from_dict(i) for i in d.get("items", ())),
            shipping_address_hash=d.get("shipping_address_hash"),
            customer_address_hash=d.get("customer_address_hash"),
            traffic_source=d.get("traffic_source"),
            promotion_code=d.get("promotion_code"),
            customer_time_zone=d.get("customer_time_zone"),
            identifiers=identifiers_of(d.get("identifiers")),
        )


@final
class PaymentAttempted(ShopEvent, frozen=True, kw_only=True, tag="payment_attempted"):
    """A payment attempt for an order, succeeded or failed."""

    type: ClassVar[str] = "payment_attempted"
    order_id: str
    status: PaymentStatus
    amount: Money
    method: PaymentMethod
    payment_id: str | None = None
    failure_reason: str | None = None
    identifiers: Identifiers = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PaymentAttempted:
        return cls(
            **cls._common(d),
            order_id=d["order_id"],
            status=d["status"],
            amount=Money.from_dict(d["amount"]),
            method=d["method"],
            payment_id=d.get("payment_id"),
            failure_reason=d.get("failure_reason"),
            identifiers=identifiers_of(d.get("identifiers")),
        )


@final
class OrderStatusChanged(ShopEvent, frozen=True, kw_only=True, tag="order_status_changed"):
    """An order changed status (cancelled, paid, completed, refunded, cod_refused)."""

    type: ClassVar[str] = "order_status_changed"
    order_id: str
    status: OrderStatus
    cancelled_by: CancelledBy | None = None
    refund: Money | None = None
    reason: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OrderStatusChanged:
        refund = d.get("refund")
        return cls(
            **cls._common(d),
            order_id=d["order_id"],
            status=d["status"],
            cancelled_by=d.get("cancelled_by"),
            refund=Money.from_dict(refund) if refund is not None else None,
            reason=d.get("reason"),
        )


@final
class InquiryReceived(ShopEvent, frozen=True, kw_only=True, tag="inquiry_received"):
    """A pre-sale question from a customer."""

    type: ClassVar[str] = "inquiry_received"
    inquiry_id: str
    product_id: str | None = None
    channel: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InquiryReceived:
        return cls(
            **cls._common(d),
            inquiry_id=d["inquiry_id"],
            product_id=d.get("product_id"),
            channel=d.get("channel"),
        )


@final
class AdminActionRequested(ShopEvent, frozen=True, kw_only=True, tag="admin_action_requested"):
    """An operator blacklists, unblacklists or erases a customer (a signed command)."""

    type: ClassVar[str] = "admin_action_requested"
    action: Literal["blacklist", "unblacklist", "erase"]
    actor: str
    reason: str
    scope: Literal["shop", "platform"] = "shop"
    duration_days: int | None = None
    note: str | None = None
    # The signature's fields (streams/auth.py); the ingest refuses a command without them.
    signer: str | None = None
    expires_at: datetime | None = None

    @property
    def duration(self) -> timedelta | None:
        return None if self.duration_days is None else timedelta(days=self.duration_days)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdminActionRequested:
        return cls(
            **cls._common(d),
            action=d["action"],
            actor=d["actor"],
            reason=d["reason"],
            scope=d.get("scope", "shop"),
            duration_days=d.get("duration_days"),
            note=d.get("note"),
            signer=d.get("signer"),
            expires_at=parse_timestamp(d["expires_at"]) if d.get("expires_at") else None,
        )


CustomerEvent = (
    CheckoutConfirmed
    | PaymentAttempted
    | OrderStatusChanged
    | InquiryReceived
    | AdminActionRequested
)


@final
class Watermark(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="watermark"):
    """No later record of this topic partition is older than `occurred_at`."""

    type: ClassVar[str] = "watermark"
    occurred_at: datetime
    source: str | None = None
    signature: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Watermark:
        return cls(
            occurred_at=parse_timestamp(d["occurred_at"]),
            source=d.get("source"),
            signature=d.get("signature"),
        )


InputEvent = CustomerEvent | Watermark

# Event type -> (record class, schema name). The single place that maps the
# `type` field of the wire format to the contract.
INPUT_EVENTS: dict[str, tuple[type[InputEvent], str]] = {
    "checkout_confirmed": (CheckoutConfirmed, "checkout_confirmed.v2"),
    "payment_attempted": (PaymentAttempted, "payment_attempted.v2"),
    "order_status_changed": (OrderStatusChanged, "order_status_changed.v1"),
    "inquiry_received": (InquiryReceived, "inquiry_received.v1"),
    "admin_action_requested": (AdminActionRequested, "admin_action_requested.v1"),
    "watermark": (Watermark, "watermark.v1"),
}
# Earlier versions still accepted, by the event type whose current version reads
# them: each later version only adds optional fields, so an earlier message is a
# valid message of the current version (tests/unit/test_contract.py holds that).
EARLIER_VERSIONS: dict[str, str] = {
    "checkout_confirmed.v1": "checkout_confirmed",
    "payment_attempted.v1": "payment_attempted",
}


@dataclass(frozen=True, slots=True)
class SourceCoordinates:
    """Where a record was read: topic, partition, offset and broker timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An input message hitrun refused, with its original bytes and the reason."""

    type: str = field(init=False, default="dead_letter")
    dead_letter_id: str
    reason: str
    detail: str
    source: SourceCoordinates
    key_b64: str | None
    value_b64: str | None
