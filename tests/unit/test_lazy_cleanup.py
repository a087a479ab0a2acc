"""Clean-ups that wait for the customer's next touch change nothing a customer or shop sees.

The agent used to wake a customer at every due instant of `unpaid.next_due`,
clean-ups included; it now wakes them at `next_wake`, which leaves clean-ups
to the next event or timer, and prunes before each event. Played the way
the agent plays them (the stream clock moves at events and at ticks), both
give the same effects at the same instants, and the same state once pruned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from hitrun.agents import retention, unpaid
from hitrun.agents.effects import Effect
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.retention import Purchase, RetentionEffect, RetentionPolicy, RetentionState
from hitrun.agents.state import CustomerState, as_of, next_wake
from hitrun.schemas.records import InputEvent
from tests.unit.events import T0, checkout, payment, status
from tests.unit.test_unpaid_invariants import END, histories

# A short dedupe window and strike window make clean-ups fall between events.
POLICIES = Policies(
    UnpaidPolicy(
        dedupe_window=timedelta(days=2),
        strike_window=timedelta(days=20),
        strike_threshold=2,
        blacklist_duration=timedelta(days=10),
    )
)
LATENESS = timedelta(minutes=5)
Wake = Callable[[CustomerState], datetime | None]


def eager(state: CustomerState) -> datetime | None:
    return unpaid.next_due(state.unpaid, POLICIES)


def lazy(state: CustomerState) -> datetime | None:
    return next_wake(state, POLICIES, RetentionPolicy(), LATENESS)


def play(
    events: list[InputEvent], ticks: list[datetime], wake: Wake, prune_first: bool
) -> tuple[list[Effect], CustomerState]:
    """The agent's loop for one customer: each clock reading wakes them if due, then the event."""
    state = CustomerState()
    out: list[Effect] = []
    readings: list[tuple[datetime, InputEvent | None]] = [(e.occurred_at, e) for e in events]
    readings += [(t, None) for t in ticks]
    readings.append((END, None))
    for now, event in sorted(readings, key=lambda r: (r[0], r[1] is not None)):
        due = wake(state)
        if due is not None and due <= now:
            state.unpaid, fired = unpaid.advance(state.unpaid, "c1", now, POLICIES)
            out += fired
        if event is not None:
            if prune_first:
                unpaid.prune(state.unpaid, now, POLICIES)
            state.unpaid, caused = unpaid.handle(state.unpaid, event, POLICIES)
            out += caused
    return out, state


@st.composite
def with_resends(draw: st.DrawFn) -> list[InputEvent]:
    """Histories, some refused COD parcels, and events sent again days later (same event id)."""
    events = draw(histories())
    for n in range(draw(st.integers(0, 2))):
        when = T0 + timedelta(minutes=draw(st.integers(0, 200 * 24 * 60)))
        events.append(checkout(f"cod{n}", when, method="cash_on_delivery"))
        events.append(status(f"cod{n}", when + timedelta(days=2), "cod_refused"))
    for event in draw(st.lists(st.sampled_from(events), max_size=4)):
        later = timedelta(hours=draw(st.integers(1, 5 * 24)))
        events.append(msgspec.structs.replace(event, occurred_at=event.occurred_at + later))
    return events


@settings(max_examples=200, deadline=None)
@given(
    with_resends(),
    st.lists(st.integers(0, 210 * 24), max_size=30).map(
        lambda hours: [T0 + timedelta(hours=h) for h in hours]
    ),
)
def test_lazy_clean_ups_give_the_same_effects_as_clean_ups_on_time(
    events: list[InputEvent], ticks: list[datetime]
) -> None:
    before, old = play(events, ticks, eager, prune_first=False)
    after, new = play(events, ticks, lazy, prune_first=True)
    assert after == before
    unpaid.prune(old.unpaid, END, POLICIES)
    unpaid.prune(new.unpaid, END, POLICIES)
    assert new == old


def test_a_paid_order_does_not_wake_its_customer_at_the_end_of_the_dedupe_window() -> None:
    events = [checkout("o1", T0)]
    state = CustomerState()
    state.unpaid, _ = unpaid.handle(state.unpaid, events[0], POLICIES)
    state.unpaid, _ = unpaid.handle(
        state.unpaid, status("o1", T0 + timedelta(hours=1), "paid"), POLICIES
    )
    assert not state.unpaid.open
    # Nothing but clean-ups left: they wake the customer, or the ids would stay forever.
    assert lazy(state) == unpaid.next_cleanup(state.unpaid, POLICIES) is not None
    # With a retention window open, the clean-ups wait for its end.
    state.retention.phase = "window"
    state.retention.cycle_start = T0
    state.retention.purchases = []
    assert lazy(state) == T0 + RetentionPolicy().window + LATENESS


def test_a_reminder_held_back_by_the_cooldown_stays_held_when_the_customer_is_touched() -> None:
    # o0's reminder at 10:00 holds o1's (due 11:00) back to the end of the cooldown,
    # 14:00 UTC: 21:00 in Jakarta, quiet, so 08:00 there (01:00 UTC). A payment at
    # 15:00 prunes the customer first; forgetting the reminder at 10:00 then would
    # send o1's reminder at once, at 11:00, in the buyer's quiet hours.
    policies = Policies()
    state = CustomerState().unpaid
    state, _ = unpaid.handle(state, checkout("o0", T0, method="bank_transfer"), policies)
    state, sent = unpaid.advance(state, "c1", T0 + timedelta(hours=1), policies)
    assert [e.at for e in sent] == [T0 + timedelta(hours=1)]
    o1 = checkout("o1", T0 + timedelta(hours=1), method="bank_transfer", tz="Asia/Jakarta")
    state, _ = unpaid.handle(state, o1, policies)
    touched = T0 + timedelta(hours=6)
    unpaid.prune(state, touched, policies)
    state, _ = unpaid.handle(state, payment("o0", touched), policies)
    quiet_over = datetime(2026, 3, 3, 1, 0, tzinfo=T0.tzinfo)
    assert unpaid.next_timer(state, policies) == quiet_over
    state, reminders = unpaid.advance(state, "c1", quiet_over, policies)
    assert [(e.order_id, e.at) for e in reminders] == [("o1", quiet_over)]


# Retention: a window closing on two or more purchases says nothing; the customer is
# woken at the end of the dormancy it starts instead (`retention.next_wake`).
DAYS = st.integers(0, 400)


def play_retention(
    purchases: list[tuple[int, bool]],
    ticks: list[int],
    lazy_wake: bool,
    views: list[dict[str, object]] | None = None,
) -> tuple[list[tuple[datetime, RetentionEffect]], RetentionState]:
    """The agent's loop for one customer's purchases (day, refunded a day later?): each clock
    reading wakes them if due, and each event fires their timers up to it first. Each
    effect with the clock reading it was published at; after each reading, what the
    support view shows (`as_of` a copy of the state) goes into `views`."""
    policy = RetentionPolicy()
    wake = retention.next_wake if lazy_wake else retention.next_due
    state = RetentionState()
    out: list[tuple[datetime, RetentionEffect]] = []
    readings: list[tuple[datetime, object]] = [(T0 + timedelta(days=d), None) for d in ticks]
    for n, (day, refunded) in enumerate(purchases):
        at = T0 + timedelta(days=day, minutes=n)
        readings.append((at, Purchase(f"o{n}", "s1", at, 1000, "IDR")))
        if refunded:
            readings.append((at + timedelta(days=1), f"o{n}"))
    readings.append((T0 + timedelta(days=2000), None))
    for now, event in sorted(readings, key=lambda r: (r[0], r[1] is not None)):
        effects: list[RetentionEffect] = []
        due = wake(state, policy)
        if due is not None and due <= now:
            effects += retention.advance(state, "c1", now, policy)
        if isinstance(event, Purchase):
            effects += retention.advance(state, "c1", now, policy)
            effects += retention.purchase(state, "c1", event, policy)
        elif isinstance(event, str):
            effects += retention.advance(state, "c1", now, policy)
            retention.refund(state, event, None)
        out += [(now, effect) for effect in effects]
        if views is not None:
            shown = CustomerState(retention=copy.deepcopy(state))
            as_of(shown, "c1", now, POLICIES, policy, timedelta(0))
            views.append(retention.describe(shown.retention, policy))
    return out, state


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(DAYS, st.booleans()), max_size=8),
    st.lists(DAYS, max_size=20),
)
def test_a_silent_window_close_waits_for_the_dormancy_with_the_same_effects_and_view(
    purchases: list[tuple[int, bool]], ticks: list[int]
) -> None:
    # What the support view shows (`as_of` the stored state) is the same as well.
    on_time: list[dict[str, object]] = []
    asleep: list[dict[str, object]] = []
    effects = play_retention(purchases, ticks, lazy_wake=False, views=on_time)
    assert play_retention(purchases, ticks, lazy_wake=True, views=asleep) == effects
    assert asleep == on_time


def test_the_view_shows_a_window_closed_on_two_purchases_as_watching() -> None:
    policy = RetentionPolicy()
    state = CustomerState()
    for n, day in enumerate((0, 30)):
        at = T0 + timedelta(days=day)
        retention.purchase(state.retention, "c1", Purchase(f"o{n}", "s1", at, 1000, "IDR"), policy)
    closed = T0 + policy.window + LATENESS
    as_of(state, "c1", closed - timedelta(seconds=1), POLICIES, policy, LATENESS)
    assert retention.describe(state.retention, policy)["phase"] == "window"
    as_of(state, "c1", closed, POLICIES, policy, LATENESS)
    shown = retention.describe(state.retention, policy)
    assert shown["phase"] == "watching"
    assert shown["next_decision_at"] == (T0 + timedelta(days=30) + policy.dormancy).isoformat()


def test_a_window_closing_on_two_purchases_wakes_nobody_until_the_dormancy_ends() -> None:
    policy = RetentionPolicy()
    state = RetentionState()
    for n, day in enumerate((0, 30)):
        at = T0 + timedelta(days=day)
        retention.purchase(state, "c1", Purchase(f"o{n}", "s1", at, 1000, "IDR"), policy)
    assert retention.next_due(state, policy) == T0 + policy.window
    assert retention.next_wake(state, policy) == T0 + timedelta(days=30) + policy.dormancy
    # One purchase: the window's end is an alert (single purchase), so it wakes them.
    single = RetentionState()
    retention.purchase(single, "c1", Purchase("o", "s1", T0, 1000, "IDR"), policy)
    assert retention.next_wake(single, policy) == retention.next_due(single, policy)
