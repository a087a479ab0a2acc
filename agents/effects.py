"""What the detectors ask the shell to do: frozen dataclasses, named in the imperative."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class ReminderLine:
    order_id: str
    shop_id: str
    amount_due_minor: int
    currency: str
    deadline: datetime


@dataclass(frozen=True, slots=True)
class SendReminder:
    """Remind the customer to pay; every unpaid order due in the same period is listed."""

    customer_id: str
    shop_id: str
    order_id: str  # the order whose reminder came due; the others share it
    attempt: int
    at: datetime
    orders: tuple[ReminderLine, ...]
    time_zone: str | None


@dataclass(frozen=True, slots=True)
class OrderEvidence:
    """What the order that cost a strike showed when it did: the alert's evidence."""

    checkout_at: datetime
    deadline: datetime | None  # None: cash on delivery
    method: str
    total_minor: int
    paid_minor: int
    currency: str
    reminders_sent: int


@dataclass(frozen=True, slots=True)
class RecordStrike:
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


@dataclass(frozen=True, slots=True)
class ReverseStrike:
    """A late payment arrived within the grace period: the strike no longer counts."""

    customer_id: str
    shop_id: str
    order_id: str
    at: datetime
    scope: str
    strike_count: int


@dataclass(frozen=True, slots=True)
class ReportRecovery:
    """An order was paid after at least one reminder: the reminder worked."""

    customer_id: str
    shop_id: str
    order_id: str
    paid_at: datetime
    reminders_sent: int
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class EvidenceLine:
    order_id: str
    shop_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Blacklist:
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


@dataclass(frozen=True, slots=True)
class EndedListing:
    """The blacklisting an unblacklisting ends, as its evidence: when it began, when it was
    due to end, which offence it was, the orders whose strikes it rested on (own, and
    `linked_orders` of the `linked_accounts` it rested on)."""

    since: datetime
    until: datetime
    offence: int
    orders: tuple[str, ...] = ()
    linked_accounts: tuple[str, ...] = ()
    linked_orders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unblacklist:
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


@dataclass(frozen=True, slots=True)
class CloseOrder:
    """An open order ended: paid, cancelled, expired, refused or abandoned (metrics, tests)."""

    customer_id: str
    shop_id: str
    order_id: str
    outcome: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RecordPurchase:
    """An order became paid (in full, in time or within the late-payment grace): a purchase."""

    customer_id: str
    shop_id: str
    order_id: str
    at: datetime
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class DropUnmatchedPayment:
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
