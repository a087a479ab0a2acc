"""Single purchase, then gone, as pure functions: purchase windows, early churn, returns, inquiries.

Definitions (all times are event times; windows are half-open, [start, end)):

- A purchase is an order that became paid. The caller reports it with
  `purchase(...)` (the unpaid detector knows when a checkout is paid) and a
  full refund with `refund(...)`, which takes the purchase back out.
- The purchase window opens at the first purchase and ends `window` later.
  At its end, a customer with exactly one purchase in it gets a
  single-purchase alert.
- A customer with `churn_min`..`churn_max` purchases in the window whose
  last purchase is `dormancy` old with nothing since gets an early-churn alert.
- A customer flagged by either rule who buys again gets a returned alert;
  that purchase then opens a new window (the customer starts over).
- The first inquiry opens an inquiry window of `window`; if it ends with no
  purchase, an inquiry-only alert.
- A timer due at the same instant as a purchase fires first: a purchase at
  exactly `first + window` is outside the window.
- Flags are remembered for `flag_memory`; a customer who buys after that is
  a new customer again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    window: timedelta = 90 * DAY
    dormancy: timedelta = 90 * DAY
    churn_min: int = 2
    churn_max: int = 5
    # How long a flag is remembered so that a return can be reported; after
    # that the customer's state is dropped (bounded state).
    flag_memory: timedelta = 365 * DAY


@dataclass(slots=True)
class Purchase:
    order_id: str
    at: datetime
    amount_minor: int
    currency: str


@dataclass(slots=True)
class RetentionState:
    """One customer's purchase window and flags. Empty means nothing to remember."""

    purchases: list[Purchase] = field(default_factory=list)
    window_start: datetime | None = None
    flagged: str | None = None  # "single_purchase" or "early_churn"
    flagged_at: datetime | None = None
    first_inquiry_at: datetime | None = None

    def is_empty(self) -> bool:
        return not (self.purchases or self.flagged or self.first_inquiry_at)


@dataclass(frozen=True, slots=True)
class FlagSinglePurchase:
    customer_id: str
    order_id: str
    first_purchase_at: datetime
    amount_minor: int
    currency: str
    at: datetime


@dataclass(frozen=True, slots=True)
class FlagEarlyChurn:
    customer_id: str
    purchases: int
    last_purchase_at: datetime
    at: datetime


@dataclass(frozen=True, slots=True)
class ReportReturn:
    customer_id: str
    flag: str
    flagged_at: datetime
    order_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class FlagInquiryOnly:
    customer_id: str
    first_inquiry_at: datetime
    at: datetime


RetentionEffect = FlagSinglePurchase | FlagEarlyChurn | ReportReturn | FlagInquiryOnly


def purchase(
    state: RetentionState,
    customer_id: str,
    order_id: str,
    at: datetime,
    amount_minor: int,
    currency: str,
) -> list[RetentionEffect]:
    """A paid order. Fire due timers with `advance` first."""
    if any(p.order_id == order_id for p in state.purchases):
        return []
    effects: list[RetentionEffect] = []
    if state.flagged is not None and state.flagged_at is not None:
        effects.append(ReportReturn(customer_id, state.flagged, state.flagged_at, order_id, at))
        state.purchases.clear()
        state.window_start = None
        state.flagged = state.flagged_at = None
    if state.window_start is None:
        state.window_start = at
    state.purchases.append(Purchase(order_id, at, amount_minor, currency))
    state.first_inquiry_at = None  # they bought: not inquiry-only
    return effects


def _trim(state: RetentionState, policy: RetentionPolicy) -> None:
    # Past the window only the count (up to churn_max + 1) and the last purchase matter.
    del state.purchases[: max(0, len(state.purchases) - (policy.churn_max + 1))]


def refund(state: RetentionState, order_id: str) -> None:
    """A full refund takes the purchase back out."""
    state.purchases = [p for p in state.purchases if p.order_id != order_id]
    if not state.purchases and state.flagged is None:
        state.window_start = None


def inquiry(state: RetentionState, at: datetime) -> None:
    if not state.purchases and state.first_inquiry_at is None:
        state.first_inquiry_at = at


def next_due(state: RetentionState, policy: RetentionPolicy) -> datetime | None:
    """The next moment `advance` has something to do; it must make progress there."""
    times = []
    if state.flagged is None and state.window_start is not None:
        end = state.window_start + policy.window
        # Before the window end, the end; after it, when the dormancy runs out.
        last = state.purchases[-1].at if state.purchases else end
        times.append(max(end, last + policy.dormancy) if len(state.purchases) > 1 else end)
    if state.first_inquiry_at is not None:
        times.append(state.first_inquiry_at + policy.window)
    if state.flagged_at is not None:
        times.append(state.flagged_at + policy.flag_memory)
    return min(times, default=None)


def advance(
    state: RetentionState, customer_id: str, now: datetime, policy: RetentionPolicy
) -> list[RetentionEffect]:
    """Fire every window end, dormancy and inquiry timer due at or before `now`."""
    effects: list[RetentionEffect] = []
    if state.first_inquiry_at is not None and state.first_inquiry_at + policy.window <= now:
        effects.append(
            FlagInquiryOnly(
                customer_id, state.first_inquiry_at, state.first_inquiry_at + policy.window
            )
        )
        state.first_inquiry_at = None
    if state.flagged_at is not None and state.flagged_at + policy.flag_memory <= now:
        state.purchases.clear()
        state.window_start = None
        state.flagged = state.flagged_at = None
    if state.flagged is not None or state.window_start is None:
        return effects
    end = state.window_start + policy.window
    if end > now:
        return effects
    in_window = [p for p in state.purchases if p.at < end]
    if len(in_window) == 1:
        first = in_window[0]
        effects.append(
            FlagSinglePurchase(
                customer_id, first.order_id, first.at, first.amount_minor, first.currency, end
            )
        )
        state.flagged, state.flagged_at = "single_purchase", end
        return effects
    if not state.purchases:
        state.window_start = None
        return effects
    _trim(state, policy)
    last = state.purchases[-1].at
    quiet_until = max(end, last + policy.dormancy)
    if quiet_until <= now:
        if policy.churn_min <= len(state.purchases) <= policy.churn_max:
            effects.append(FlagEarlyChurn(customer_id, len(state.purchases), last, quiet_until))
            state.flagged, state.flagged_at = "early_churn", quiet_until
        else:
            # A loyal customer (more than churn_max purchases) went quiet: start over.
            state.purchases.clear()
            state.window_start = None
    return effects
