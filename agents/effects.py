"""What the detectors ask the shell to do: frozen records (msgspec Structs, quick to
build), named in the imperative."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec


class ReminderLine(msgspec.Struct, frozen=True):
    order_id: str
    shop_id: str
    amount_due_minor: int
    currency: str
    deadline: datetime


class SendReminder(msgspec.Struct, frozen=True):
    """Remind the customer to pay; every unpaid order due in the same period is listed."""

    customer_id: str
    shop_id: str
    order_id: str  # the order whose reminder came due; the others share it
    attempt: int
    at: datetime
    orders: tuple[ReminderLine, ...]
    time_zone: str | None


class OrderEvidence(msgspec.Struct, frozen=True):
    """What the order that cost a strike showed when it did: the alert's evidence."""

    checkout_at: datetime
    deadline: datetime | None  # None: cash on delivery
    method: str
    total_minor: int
    paid_minor: int
    currency: str
    reminders_sent: int


class RecordStrike(msgspec.Struct, frozen=True):
    """An unpaid order expired, or a cash-on-delivery parcel was refused."""

    customer_id: str
    shop_id: str
    order_id: str
    reason: str
    at: datetime
    scope: str
    strike_count: int
    threshold: int
    # The policy's rolling window the count is taken over.
    window: timedelta
    # The order as it stood (None: no longer held, e.g. cancelled after it expired).
    order: OrderEvidence | None = None


class ReverseStrike(msgspec.Struct, frozen=True):
    """A late payment arrived within the grace period: the strike no longer counts."""

    customer_id: str
    shop_id: str
    order_id: str
    at: datetime
    scope: str
    strike_count: int


class ReportRecovery(msgspec.Struct, frozen=True):
    """An order was paid after at least one reminder: the reminder worked."""

    customer_id: str
    shop_id: str
    order_id: str
    paid_at: datetime
    reminders_sent: int
    amount_minor: int
    currency: str


class EvidenceLine(msgspec.Struct, frozen=True):
    order_id: str
    shop_id: str
    reason: str
    at: datetime


class Blacklist(msgspec.Struct, frozen=True):
    """Put the customer on the blacklist of `scope` (a shop id, or "*" for the platform)."""

    customer_id: str
    scope: str
    since: datetime
    until: datetime
    offence: int
    evidence: tuple[EvidenceLine, ...]
    actor: str
    reason: str
    note: str | None = None  # an operator's free text, recorded as given
    linked_to: str | None = None  # through this linked account (Listing.linked_to)
    # The linked accounts it rests on: `linked_to`, or those whose strikes it counted.
    linked_accounts: tuple[str, ...] = ()


class EndedListing(msgspec.Struct, frozen=True):
    """The blacklisting an unblacklisting ends, as its evidence: when it began, when it was
    due to end, which offence it was, the orders whose strikes it rested on (own, and
    `linked_orders` of the `linked_accounts` it rested on)."""

    since: datetime
    until: datetime
    offence: int
    orders: tuple[str, ...] = ()
    linked_accounts: tuple[str, ...] = ()
    linked_orders: tuple[str, ...] = ()


class Unblacklist(msgspec.Struct, frozen=True):
    """Take the customer off the blacklist of `scope`."""

    customer_id: str
    scope: str
    at: datetime
    cause: str  # "expired", "strike_reversed" or "manual"
    actor: str
    reason: str
    note: str | None = None  # an operator's free text, recorded as given
    linked_to: str | None = None
    ended: EndedListing | None = None
    # cause "strike_reversed": the strikes it still rests on, below this threshold.
    standing: int | None = None
    threshold: int | None = None


class CloseOrder(msgspec.Struct, frozen=True):
    """An open order ended: paid, cancelled, expired, refused or abandoned (metrics, tests)."""

    customer_id: str
    shop_id: str
    order_id: str
    outcome: str
    at: datetime


class RecordPurchase(msgspec.Struct, frozen=True):
    """An order became paid (in full, in time or within the late-payment grace): a purchase."""

    customer_id: str
    shop_id: str
    order_id: str
    at: datetime
    amount_minor: int
    currency: str


class DropUnmatchedPayment(msgspec.Struct, frozen=True):
    """A payment whose checkout never arrived within the hold period (counted, not alerted)."""

    customer_id: str
    order_id: str
    event_id: str


Effect = (
    SendReminder
    | RecordStrike
    | ReverseStrike
    | ReportRecovery
    | Blacklist
    | Unblacklist
    | CloseOrder
    | RecordPurchase
    | DropUnmatchedPayment
)
