"""Single purchase, then gone, as pure functions: purchase cycles, early churn, returns, inquiries.

The definitions are written out, with their tie rules, in docs/detection.md;
in short (all times are event times, windows half-open):

- A customer with nothing remembered is new. Their first purchase opens a
  cycle and its window [first, first + window); it also gets a first-purchase
  risk assessment from the checkout traits seen so far (agents/risk.py).
- At the window end, exactly one purchase in it: single-purchase flag.
  Two or more: the cycle is watched until `dormancy` after its last purchase;
  then `churn_min`..`churn_max` purchases is an early-churn flag, more is a
  loyal customer, forgotten.
- A flagged customer who buys again is reported returned, and that purchase
  opens a new cycle. A flag is remembered for `flag_memory`, then forgotten.
- A new customer's first inquiry opens an inquiry window; no purchase before
  it ends: inquiry-only.
- A timer due at the same instant as an event fires first.

`advance` fires every timer due up to `now`, one instant at a time, and each
firing changes the state, so `next_due` always moves forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import final

import msgspec

from hitrun.agents.risk import OrderTraits, RiskWeights, assess

DAY = timedelta(days=1)
# Checkout traits kept per customer at most (a bot confirming orders all day stays bounded).
MAX_TRAITS = 20

WINDOW = "window"  # the cycle's window is open
WATCHING = "watching"  # the window ended with 2+ purchases; waiting for dormancy
FLAGGED = "flagged"  # single purchase or early churn; waiting for a return


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    window: timedelta = 90 * DAY
    dormancy: timedelta = 90 * DAY
    churn_min: int = 2
    churn_max: int = 5
    # How long a flag is remembered so that a return can be reported; after
    # that the customer's state is dropped (bounded state).
    flag_memory: timedelta = 365 * DAY
    # Checkout traits wait this long for their order's payment before they are dropped.
    trait_memory: timedelta = 7 * DAY
    # "Several orders on the first day": checkouts in this span up to the first purchase.
    first_day: timedelta = DAY
    weights: RiskWeights = field(default_factory=RiskWeights)


class Purchase(msgspec.Struct, gc=False, omit_defaults=True):
    order_id: str
    shop_id: str
    at: datetime
    amount_minor: int
    currency: str


class RetentionState(msgspec.Struct, gc=False, omit_defaults=True):
    """One customer's purchase cycle, flag and inquiry window. Empty means nothing to remember."""

    phase: str | None = None  # None (new), WINDOW, WATCHING or FLAGGED
    # The cycle's purchases, oldest first; only the last churn_max + 1 are
    # kept, enough to tell single purchase, early churn and loyalty apart.
    purchases: list[Purchase] = msgspec.field(default_factory=list)
    cycle_start: datetime | None = None
    risk_score: float = 0.0  # of the purchase that opened the cycle
    risk_factors: list[str] = msgspec.field(default_factory=list)
    flag: str | None = None  # "single_purchase" or "early_churn"
    flagged_at: datetime | None = None
    inquiry_at: datetime | None = None  # start of the open inquiry window
    inquiry_shop: str | None = None
    inquiries: int = 0
    # Traits of checkouts made while no cycle is open, oldest first.
    traits: list[OrderTraits] = msgspec.field(default_factory=list)

    def is_empty(self) -> bool:
        return self.phase is None and self.inquiry_at is None and not self.traits


@final
class WarnFirstPurchase(msgspec.Struct, frozen=True):
    """A new customer's first purchase, with its one-time-buyer risk."""

    customer_id: str
    shop_id: str
    order_id: str
    at: datetime
    amount_minor: int
    currency: str
    score: float
    factors: tuple[str, ...]
    orders_first_day: int


@final
class FlagSinglePurchase(msgspec.Struct, frozen=True):
    customer_id: str
    shop_id: str
    order_id: str
    first_purchase_at: datetime
    amount_minor: int
    currency: str
    at: datetime
    window: timedelta
    score: float
    factors: tuple[str, ...]


@final
class FlagEarlyChurn(msgspec.Struct, frozen=True):
    customer_id: str
    purchases: int
    first_purchase_at: datetime
    last_purchase_at: datetime
    last_order_id: str
    at: datetime


@final
class ReportReturn(msgspec.Struct, frozen=True):
    customer_id: str
    shop_id: str
    order_id: str
    amount_minor: int
    currency: str
    flag: str
    flagged_at: datetime
    at: datetime


@final
class FlagInquiryOnly(msgspec.Struct, frozen=True):
    customer_id: str
    shop_id: str
    first_inquiry_at: datetime
    inquiries: int
    at: datetime
    window: timedelta


RetentionEffect = (
    WarnFirstPurchase | FlagSinglePurchase | FlagEarlyChurn | ReportReturn | FlagInquiryOnly
)


# ---------------------------------------------------------------------------
# Events


def checkout(state: RetentionState, traits: OrderTraits) -> None:
    """A confirmed order: its traits are kept for the risk of the purchase that opens a cycle."""
    if state.phase in (None, FLAGGED) and (
        not state.traits or all(t.order_id != traits.order_id for t in state.traits)
    ):
        state.traits.append(traits)
        del state.traits[:-MAX_TRAITS]


def purchase(
    state: RetentionState,
    customer_id: str,
    order: Purchase,
    policy: RetentionPolicy,
) -> list[RetentionEffect]:
    """An order became paid. Timers due up to `order.at` must already have fired."""
    if state.purchases and any(p.order_id == order.order_id for p in state.purchases):
        return []
    effects: list[RetentionEffect] = []
    if state.phase in (WINDOW, WATCHING):
        state.purchases.append(order)
        del state.purchases[: -(policy.churn_max + 1)]
        return effects
    if state.phase == FLAGGED:
        assert state.flag is not None and state.flagged_at is not None
        effects.append(
            ReportReturn(
                customer_id,
                order.shop_id,
                order.order_id,
                order.amount_minor,
                order.currency,
                state.flag,
                state.flagged_at,
                order.at,
            )
        )
    score, factors, first_day = _risk(state, order, policy)
    if state.phase is None:
        effects.append(
            WarnFirstPurchase(
                customer_id,
                order.shop_id,
                order.order_id,
                order.at,
                order.amount_minor,
                order.currency,
                score,
                factors,
                first_day,
            )
        )
    _open_cycle(state, order, score, factors)
    return effects


def _risk(
    state: RetentionState, order: Purchase, policy: RetentionPolicy
) -> tuple[float, tuple[str, ...], int]:
    own = next((t for t in state.traits if t.order_id == order.order_id), None)
    since = order.at - policy.first_day
    others = sum(
        1 for t in state.traits if since < t.at <= order.at and t.order_id != order.order_id
    )
    first_day = others + 1
    score, factors = assess(own, first_day, policy.weights)
    return score, factors, first_day


def _open_cycle(
    state: RetentionState, order: Purchase, score: float, factors: tuple[str, ...]
) -> None:
    _forget(state)
    state.phase = WINDOW
    state.purchases = [order]
    state.cycle_start = order.at
    state.risk_score, state.risk_factors = score, list(factors)
    # A buyer is not inquiry-only, and their checkout traits have served.
    state.inquiry_at, state.inquiry_shop, state.inquiries = None, None, 0
    state.traits.clear()


def refund(state: RetentionState, order_id: str, amount_minor: int | None) -> None:
    """A refund: a full one (no amount, or at least the purchase's) takes the purchase out.

    A cycle left with no purchase closes, and the customer is new again.
    Alerts already sent are not taken back.
    """
    if state.phase not in (WINDOW, WATCHING):
        return
    for p in state.purchases:
        if p.order_id == order_id and (amount_minor is None or amount_minor >= p.amount_minor):
            state.purchases.remove(p)
            break
    if not state.purchases:
        _forget(state)


def inquiry(state: RetentionState, shop_id: str, at: datetime) -> None:
    """A pre-sale question; only a new customer's inquiries are watched."""
    if state.phase is not None:
        return
    if state.inquiry_at is None:
        state.inquiry_at, state.inquiry_shop, state.inquiries = at, shop_id, 1
    else:
        state.inquiries += 1


def _forget(state: RetentionState) -> None:
    state.phase = None
    state.purchases = []
    state.cycle_start = None
    state.risk_score, state.risk_factors = 0.0, []
    state.flag = state.flagged_at = None


# ---------------------------------------------------------------------------
# Timers


def _cycle_due(state: RetentionState, policy: RetentionPolicy) -> datetime | None:
    if state.phase == WINDOW:
        assert state.cycle_start is not None
        return state.cycle_start + policy.window
    if state.phase == WATCHING:
        assert state.cycle_start is not None
        return max(state.cycle_start + policy.window, state.purchases[-1].at + policy.dormancy)
    if state.phase == FLAGGED:
        assert state.flagged_at is not None
        return state.flagged_at + policy.flag_memory
    return None


def next_due(state: RetentionState, policy: RetentionPolicy) -> datetime | None:
    """The next instant `advance` has something to do."""
    if state.inquiry_at is None and not state.traits:  # most states: only the cycle's own
        return _cycle_due(state, policy)
    return _earliest(state, policy, _cycle_due(state, policy))


def next_wake(state: RetentionState, policy: RetentionPolicy) -> datetime | None:
    """When the customer must be woken for this detector: `next_due`, except that a window
    closing on two or more purchases, which only starts the wait for dormancy and says
    nothing, is passed over for the end of that wait.

    `advance` still fires both, in order and each at its own time, whenever the
    customer is next woken or touched (an event fires its customer's timers up to
    it first): their effects are the same, one wake-up later. About one firing in
    five was such a silent window close.
    """
    cycle = _cycle_due(state, policy)
    if cycle is not None and state.phase == WINDOW and len(state.purchases) > 1:
        # The due time of WATCHING, which the window's end would move it to.
        cycle = max(cycle, state.purchases[-1].at + policy.dormancy)
    if state.inquiry_at is None and not state.traits:
        return cycle
    return _earliest(state, policy, cycle)


def _earliest(
    state: RetentionState, policy: RetentionPolicy, due: datetime | None
) -> datetime | None:
    """The earliest of `due` and the inquiry's and traits' own due times."""
    # On equal instants the earlier candidate wins, as min() would pick it.
    if state.inquiry_at is not None:
        inquiry_due = state.inquiry_at + policy.window
        if due is None or inquiry_due < due:
            due = inquiry_due
    if state.traits:
        traits_due = min(t.at for t in state.traits) + policy.trait_memory
        if due is None or traits_due < due:
            due = traits_due
    return due


def advance(
    state: RetentionState, customer_id: str, now: datetime, policy: RetentionPolicy
) -> list[RetentionEffect]:
    """Fire every timer due at or before `now`, earliest first."""
    effects: list[RetentionEffect] = []
    due = next_due(state, policy)
    while due is not None and due <= now:
        _fire(state, customer_id, due, policy, effects)
        due = next_due(state, policy)
    return effects


def _fire(
    state: RetentionState,
    customer_id: str,
    at: datetime,
    policy: RetentionPolicy,
    effects: list[RetentionEffect],
) -> None:
    """Fire what is due at `at` (the earliest due instant)."""
    if state.traits:  # a comprehension is a call of its own
        state.traits = [t for t in state.traits if t.at + policy.trait_memory > at]
    if state.inquiry_at is not None and state.inquiry_at + policy.window <= at:
        assert state.inquiry_shop is not None
        effects.append(
            FlagInquiryOnly(
                customer_id,
                state.inquiry_shop,
                state.inquiry_at,
                state.inquiries,
                at,
                policy.window,
            )
        )
        state.inquiry_at, state.inquiry_shop, state.inquiries = None, None, 0
    due = _cycle_due(state, policy)
    if due is None or due > at:
        return
    if state.phase == WINDOW:
        _end_window(state, customer_id, at, policy, effects)
    elif state.phase == WATCHING:
        _end_dormancy(state, customer_id, at, policy, effects)
    else:  # FLAGGED, and the flag memory ran out
        _forget(state)


def _end_window(
    state: RetentionState,
    customer_id: str,
    at: datetime,
    policy: RetentionPolicy,
    effects: list[RetentionEffect],
) -> None:
    if len(state.purchases) != 1:
        state.phase = WATCHING
        return
    first = state.purchases[0]
    effects.append(
        FlagSinglePurchase(
            customer_id,
            first.shop_id,
            first.order_id,
            first.at,
            first.amount_minor,
            first.currency,
            at,
            policy.window,
            state.risk_score,
            tuple(state.risk_factors),
        )
    )
    _flag(state, "single_purchase", at)


def _end_dormancy(
    state: RetentionState,
    customer_id: str,
    at: datetime,
    policy: RetentionPolicy,
    effects: list[RetentionEffect],
) -> None:
    count = len(state.purchases)
    if not policy.churn_min <= count <= policy.churn_max:
        _forget(state)  # a loyal customer went quiet (or refunds left too few): start over
        return
    assert state.cycle_start is not None
    last = state.purchases[-1]
    effects.append(
        FlagEarlyChurn(customer_id, count, state.cycle_start, last.at, last.order_id, at)
    )
    _flag(state, "early_churn", at)


def _flag(state: RetentionState, flag: str, at: datetime) -> None:
    _forget(state)
    state.phase, state.flag, state.flagged_at = FLAGGED, flag, at


# ---------------------------------------------------------------------------
# Storage and inspection


def describe(state: RetentionState, policy: RetentionPolicy) -> dict[str, object]:
    """The customer's retention state for support staff (GET /customers/{id})."""

    def ts(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    due = _cycle_due(state, policy)
    return {
        "phase": state.phase or "new",
        "cycle_start": ts(state.cycle_start),
        "purchases_in_cycle": len(state.purchases),
        "flag": state.flag,
        "flagged_at": ts(state.flagged_at),
        "next_decision_at": ts(due),
        "inquiry_window_start": ts(state.inquiry_at),
        "inquiries": state.inquiries,
        "first_purchase_risk": {"score": state.risk_score, "factors": state.risk_factors}
        if state.phase is not None
        else None,
    }
