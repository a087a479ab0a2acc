"""Builders of input events for the pure-core tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson

from hitrun.schemas.records import (
    AdminActionRequested,
    CheckoutConfirmed,
    Money,
    OrderStatusChanged,
    PaymentAttempted,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 16:00 in Jakarta
_ids = itertools.count(1)


def at(hours: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, days=days)


def checkout(
    order: str,
    when: datetime = T0,
    *,
    method: str = "bank_transfer",
    amount: int = 10_000,
    customer: str = "c1",
    shop: str = "s1",
    due: datetime | None = None,
    tz: str | None = None,
) -> CheckoutConfirmed:
    return CheckoutConfirmed(
        event_id=f"e{next(_ids)}",
        customer_id=customer,
        shop_id=shop,
        occurred_at=when,
        order_id=order,
        total=Money(amount, "IDR"),
        payment_method=method,  # type: ignore[arg-type]
        payment_due_at=due,
        customer_time_zone=tz,
    )


def payment(
    order: str,
    when: datetime,
    *,
    amount: int = 10_000,
    status: str = "succeeded",
    customer: str = "c1",
    shop: str = "s1",
    currency: str = "IDR",
) -> PaymentAttempted:
    return PaymentAttempted(
        event_id=f"e{next(_ids)}",
        customer_id=customer,
        shop_id=shop,
        occurred_at=when,
        order_id=order,
        status=status,  # type: ignore[arg-type]
        amount=Money(amount, currency),
        method="bank_transfer",
    )


def status(
    order: str,
    when: datetime,
    new_status: str,
    *,
    by: str | None = None,
    customer: str = "c1",
    shop: str = "s1",
) -> OrderStatusChanged:
    return OrderStatusChanged(
        event_id=f"e{next(_ids)}",
        customer_id=customer,
        shop_id=shop,
        occurred_at=when,
        order_id=order,
        status=new_status,  # type: ignore[arg-type]
        cancelled_by=by,  # type: ignore[arg-type]
    )


def admin(
    action: str, when: datetime, *, customer: str = "c1", shop: str = "s1", days: int | None = None
) -> AdminActionRequested:
    return AdminActionRequested(
        event_id=f"e{next(_ids)}",
        customer_id=customer,
        shop_id=shop,
        occurred_at=when,
        action=action,  # type: ignore[arg-type]
        actor="ops:alice",
        reason="manual check",
        duration_days=days,
    )


def as_version_1(state: Any) -> bytes:
    """A state (or part of one) as the revision before the versioned codec stored it:
    orjson's JSON of every field in order (none left out), datetimes in orjson's form."""
    return orjson.dumps(_fields(state))


def _fields(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return {name: _fields(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list | tuple):
        return [_fields(item) for item in value]
    if isinstance(value, dict):
        return {key: _fields(item) for key, item in value.items()}
    return value
