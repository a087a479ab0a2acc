"""The unpaid-after-checkout rules, one table row or case per rule (README, "The rules")."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from hitrun.agents.alerts import to_alert
from hitrun.agents.effects import (
    Blacklist,
    CloseOrder,
    DropUnmatchedPayment,
    RecordStrike,
    ReportRecovery,
    ReverseStrike,
    SendReminder,
    Unblacklist,
)
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.unpaid import UnpaidState, next_due
from tests.unit.events import T0, admin, at, checkout, payment, status
from tests.unit.timeline import of_type, play

H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("method", "reminder_hours", "deadline_hours"),
    [
        ("card", [], 1),  # +1h is the deadline itself and 3h before is before checkout: none fit
        ("e_wallet", [], 1),
        ("bank_transfer", [1, 21], 24),
        ("virtual_account", [1, 21], 24),
        ("convenience_store", [1, 45], 48),
    ],
)
def test_unpaid_order_gets_the_default_reminders_then_expires_with_a_strike(
    method: str, reminder_hours: list[int], deadline_hours: int
) -> None:
    effects, _ = play([checkout("o1", method=method)], until=at(days=3))
    reminders = of_type(effects, SendReminder)
    assert [r.at for r in reminders] == [at(hours=h) for h in reminder_hours]
    assert [r.attempt for r in reminders] == list(range(1, len(reminder_hours) + 1))
    (strike,) = of_type(effects, RecordStrike)
    assert (strike.order_id, strike.reason, strike.at) == ("o1", "unpaid", at(hours=deadline_hours))
    assert strike.strike_count == 1
    assert [c.outcome for c in of_type(effects, CloseOrder)] == ["expired"]


def test_an_explicit_due_time_in_the_checkout_wins_over_the_method_window() -> None:
    effects, _ = play([checkout("o1", method="card", due=at(hours=6))], until=at(days=1))
    # +1h, and 3h before the deadline (+3h) postponed by the 4h cooldown to +5h.
    assert [r.at for r in of_type(effects, SendReminder)] == [at(hours=1), at(hours=5)]
    assert of_type(effects, RecordStrike)[0].at == at(hours=6)


def test_payment_covering_the_total_closes_the_order_and_stops_reminders() -> None:
    effects, _ = play([checkout("o1"), payment("o1", at(hours=0.5))], until=at(days=3))
    assert of_type(effects, SendReminder) == []
    assert of_type(effects, RecordStrike) == []
    assert [c.outcome for c in of_type(effects, CloseOrder)] == ["paid"]
    assert of_type(effects, ReportRecovery) == []


def test_payment_after_a_reminder_reports_a_recovery() -> None:
    effects, _ = play([checkout("o1"), payment("o1", at(hours=2))], until=at(days=3))
    assert len(of_type(effects, SendReminder)) == 1
    (recovery,) = of_type(effects, ReportRecovery)
    assert (recovery.order_id, recovery.reminders_sent, recovery.paid_at) == ("o1", 1, at(hours=2))


@pytest.mark.parametrize(
    ("payments", "closes"),
    [
        ([("succeeded", 4_000)], False),
        ([("succeeded", 4_000), ("succeeded", 6_000)], True),
        ([("failed", 10_000)], False),
        ([("failed", 10_000), ("succeeded", 10_000)], True),
    ],
)
def test_failed_and_partial_payments_do_not_close_an_order(
    payments: list[tuple[str, int]], closes: bool
) -> None:
    events = [checkout("o1")] + [
        payment("o1", at(hours=0.1 * (i + 1)), amount=amount, status=state)
        for i, (state, amount) in enumerate(payments)
    ]
    effects, _ = play(events, until=at(days=2))
    assert bool(of_type(effects, RecordStrike)) is not closes


def test_payment_in_another_currency_does_not_count() -> None:
    effects, _ = play([checkout("o1"), payment("o1", at(hours=0.2), currency="USD")], at(days=2))
    assert len(of_type(effects, RecordStrike)) == 1


def test_payment_before_its_checkout_is_held_and_matched() -> None:
    effects, _ = play(
        [payment("o1", at(hours=-0.2)), checkout("o1", at(hours=0))], until=at(days=2)
    )
    assert [c.outcome for c in of_type(effects, CloseOrder)] == ["paid"]
    assert of_type(effects, RecordStrike) == []


def test_a_held_payment_whose_checkout_never_comes_is_dropped_after_the_hold() -> None:
    effects, state = play([payment("o9", at(hours=0))], until=at(hours=2))
    (dropped,) = of_type(effects, DropUnmatchedPayment)
    assert dropped.order_id == "o9"
    assert state.held == {}


@pytest.mark.parametrize(
    ("by", "buyer_strikes", "struck"),
    [
        ("buyer", False, False),
        ("buyer", True, True),
        ("seller", True, False),
        ("system", True, False),
        ("logistics", True, False),
    ],
)
def test_cancellations_strike_only_the_buyer_and_only_when_the_policy_says(
    by: str, buyer_strikes: bool, struck: bool
) -> None:
    policies = Policies(UnpaidPolicy(buyer_cancellation_strikes=buyer_strikes))
    effects, _ = play(
        [checkout("o1"), status("o1", at(hours=0.5), "cancelled", by=by)], at(days=2), policies
    )
    assert [c.outcome for c in of_type(effects, CloseOrder)] == ["cancelled"]
    assert [s.reason for s in of_type(effects, RecordStrike)] == (
        ["buyer_cancelled"] if struck else []
    )
    assert of_type(effects, SendReminder) == []


def test_refused_cash_on_delivery_parcel_is_a_strike_at_once() -> None:
    effects, _ = play(
        [checkout("o1", method="cash_on_delivery"), status("o1", at(days=3), "cod_refused")],
        until=at(days=4),
    )
    (strike,) = of_type(effects, RecordStrike)
    assert (strike.reason, strike.at) == ("cod_refused", at(days=3))
    assert of_type(effects, SendReminder) == []
    assert [c.outcome for c in of_type(effects, CloseOrder)] == ["refused"]


def test_order_marked_paid_by_the_shop_closes_it() -> None:
    effects, _ = play([checkout("o1"), status("o1", at(hours=3), "paid")], until=at(days=2))
    assert [c.outcome for c in of_type(effects, CloseOrder)] == ["paid"]
    assert len(of_type(effects, ReportRecovery)) == 1


def test_a_duplicated_event_changes_nothing() -> None:
    first = checkout("o1")
    effects_once, _ = play([first], until=at(days=2))
    effects_twice, _ = play([first, first], until=at(days=2))
    assert effects_once == effects_twice
    pay = payment("o1", at(hours=0.5), amount=6_000)
    effects, _ = play([first, pay, pay], until=at(days=2))
    assert len(of_type(effects, RecordStrike)) == 1  # 6,000 counted once, not 12,000


def test_a_resent_checkout_with_a_new_event_id_does_not_reopen_the_order() -> None:
    effects, _ = play(
        [checkout("o1"), payment("o1", at(hours=0.5)), checkout("o1", at(hours=0.6))],
        until=at(days=2),
    )
    assert of_type(effects, RecordStrike) == []


def test_a_reminder_in_quiet_hours_waits_for_their_end() -> None:
    # 13:30 UTC is 20:30 in Jakarta; +1h is 21:30, inside 21:00-08:00, so 08:00 local (01:00 UTC).
    start = T0.replace(hour=13, minute=30)
    effects, _ = play([checkout("o1", start, tz="Asia/Jakarta")], until=start + 2 * 24 * H)
    times = [r.at for r in of_type(effects, SendReminder)]
    assert times[0] == start.replace(hour=1, minute=0) + 24 * H
    assert all(not (14 <= t.hour < 24 or t.hour < 1) for t in times)  # 21:00-08:00 WIB


def test_a_reminder_pushed_past_the_deadline_by_quiet_hours_is_skipped() -> None:
    start = T0.replace(hour=13, minute=30)  # 20:30 in Jakarta
    effects, _ = play(
        [checkout("o1", start, tz="Asia/Jakarta", due=start + 6 * H)], until=start + 24 * H
    )
    assert of_type(effects, SendReminder) == []


def test_without_a_known_time_zone_quiet_hours_do_not_apply() -> None:
    start = T0.replace(hour=13, minute=30)
    effects, _ = play([checkout("o1", start)], until=start + 2 * H)
    assert [r.at for r in of_type(effects, SendReminder)] == [start + H]


def test_orders_due_in_the_same_cooldown_share_one_reminder() -> None:
    effects, _ = play(
        [checkout("o1", at(0)), checkout("o2", at(0.5)), checkout("o3", at(0.8))],
        until=at(hours=12),
    )
    reminders = of_type(effects, SendReminder)
    assert len(reminders) == 1
    (only,) = reminders
    assert only.at == at(hours=1)
    assert [line.order_id for line in only.orders] == ["o1", "o2", "o3"]


def test_the_cooldown_postpones_a_later_reminder_rather_than_dropping_it() -> None:
    effects, _ = play([checkout("o1", at(0)), checkout("o2", at(4.5))], until=at(hours=12))
    reminders = of_type(effects, SendReminder)
    assert [(r.at, r.order_id) for r in reminders] == [(at(1), "o1"), (at(5.5), "o2")]


def _three_expiries(shop: str = "s1") -> list:
    return [checkout(f"o{i}", at(days=10 * i), method="card", shop=shop) for i in range(3)]


def test_the_third_strike_in_90_days_blacklists_with_evidence_and_an_end_time() -> None:
    effects, _ = play(_three_expiries(), until=at(days=25))
    assert [s.strike_count for s in of_type(effects, RecordStrike)] == [1, 2, 3]
    (listing,) = of_type(effects, Blacklist)
    assert listing.scope == "s1"
    assert listing.since == at(days=20, hours=1)
    assert listing.until == listing.since + timedelta(days=90)
    assert [e.order_id for e in listing.evidence] == ["o0", "o1", "o2"]
    assert listing.offence == 1


def test_strikes_older_than_the_window_do_not_count() -> None:
    events = [checkout(f"o{i}", at(days=50 * i), method="card") for i in range(3)]
    effects, _ = play(events, until=at(days=120))
    assert [s.strike_count for s in of_type(effects, RecordStrike)] == [1, 2, 2]
    assert of_type(effects, Blacklist) == []


def test_blacklisting_ends_by_itself_at_its_end_time() -> None:
    effects, state = play(_three_expiries(), until=at(days=200))
    (listing,) = of_type(effects, Blacklist)
    (ended,) = of_type(effects, Unblacklist)
    assert (ended.at, ended.cause) == (listing.until, "expired")
    assert state.listings == {}


def test_a_repeat_offender_is_blacklisted_twice_as_long() -> None:
    later = [checkout(f"p{i}", at(days=120 + 10 * i), method="card") for i in range(3)]
    effects, _ = play(_three_expiries() + later, until=at(days=200))
    first, second = of_type(effects, Blacklist)
    assert second.offence == 2
    assert second.until - second.since == 2 * (first.until - first.since)


def test_a_late_payment_within_grace_reverses_the_strike() -> None:
    effects, _ = play([checkout("o1", method="card"), payment("o1", at(hours=5))], at(days=2))
    (reversal,) = of_type(effects, ReverseStrike)
    assert (reversal.order_id, reversal.strike_count) == ("o1", 0)


def test_a_payment_after_the_grace_period_leaves_the_strike() -> None:
    effects, _ = play([checkout("o1", method="card"), payment("o1", at(hours=26))], at(days=2))
    assert of_type(effects, ReverseStrike) == []
    assert len(of_type(effects, RecordStrike)) == 1


@pytest.mark.parametrize("by", ["buyer", "seller", "system"])
def test_a_cancellation_before_the_deadline_read_after_the_expiry_reverses_the_strike(
    by: str,
) -> None:
    # The cancellation was slower to arrive than the deadline (a rerouted record, a lagging
    # topic): applied at its own time, it takes back the strike the expiry gave.
    first, state = play([checkout("o1", method="card")], until=at(hours=2))
    assert len(of_type(first, RecordStrike)) == 1
    later, state = play(
        [status("o1", at(hours=0.5), "cancelled", by=by)], until=at(hours=3), state=state
    )
    (reversal,) = of_type(later, ReverseStrike)
    assert (reversal.order_id, reversal.strike_count, reversal.at) == ("o1", 0, at(hours=0.5))
    assert of_type(later, RecordStrike) == []
    assert state.expired == {} and "o1" in state.closed


def test_a_buyer_cancellation_read_late_strikes_as_one_read_in_time_when_the_policy_says() -> None:
    policies = Policies(UnpaidPolicy(buyer_cancellation_strikes=True))
    _, state = play([checkout("o1", method="card")], until=at(hours=2), policies=policies)
    later, _ = play(
        [status("o1", at(hours=0.5), "cancelled", by="buyer")],
        until=at(hours=3),
        policies=policies,
        state=state,
    )
    assert [r.order_id for r in of_type(later, ReverseStrike)] == ["o1"]
    assert [s.reason for s in of_type(later, RecordStrike)] == ["buyer_cancelled"]


def test_a_cancellation_after_the_deadline_leaves_the_strike() -> None:
    effects, state = play(
        [checkout("o1", method="card"), status("o1", at(hours=1.5), "cancelled", by="seller")],
        until=at(hours=3),
    )
    assert len(of_type(effects, RecordStrike)) == 1
    assert of_type(effects, ReverseStrike) == []
    assert "o1" in state.expired


def test_a_late_cancellation_that_takes_back_a_blacklisting_strike_says_so() -> None:
    _, state = play(_three_expiries(), until=at(days=21))
    effects, state = play(
        [status("o2", at(days=20, hours=0.5), "cancelled", by="buyer")],
        until=at(days=21),
        state=state,
    )
    (ended,) = of_type(effects, Unblacklist)
    assert ended.reason == "strike for order o2 reversed by a cancellation before its deadline"
    assert state.listings == {}
    # Its evidence: the blacklisting it ends, and the two strikes left of the three.
    assert ended.ended is not None
    assert sorted(ended.ended.orders) == ["o0", "o1", "o2"]
    assert (ended.ended.offence, ended.standing, ended.threshold) == (1, 2, 3)


def test_an_undone_repeat_blacklisting_leaves_the_first_offence_as_it_was() -> None:
    # Five card orders unpaid: three strikes blacklist for 90 days, two more stay. Just after
    # that listing ends, a sixth expiry makes three live strikes again (a repeat offence),
    # and its payment at the deadline reverses that strike: the repeat is undone.
    minute = timedelta(minutes=1)
    first = [checkout(f"o{i}", T0 + (i // 3) * 2 * minute, method="card") for i in range(5)]
    sixth = T0 + timedelta(days=90) + minute
    late = [checkout("o5", sixth, method="card"), payment("o5", sixth + H)]
    effects, state = play([*first, *late], until=sixth + 2 * H)
    assert [b.offence for b in of_type(effects, Blacklist)] == [1, 2]
    assert [u.cause for u in of_type(effects, Unblacklist)] == ["expired", "strike_reversed"]
    first_end = at(hours=1, days=90)
    assert state.offences["s1"].count == 1 and state.offences["s1"].last_end == first_end
    # ... and ages out from the first listing's end, leaving nothing behind.
    _, state = play([], until=first_end + timedelta(days=400), state=state)
    assert state.is_empty()


def test_a_reversal_dropping_below_the_threshold_unblacklists() -> None:
    events = [*_three_expiries(), payment("o2", at(days=20, hours=3))]
    effects, state = play(events, until=at(days=21))
    assert len(of_type(effects, Blacklist)) == 1
    (ended,) = of_type(effects, Unblacklist)
    assert ended.cause == "strike_reversed"
    assert state.listings == {}
    assert of_type(effects, ReverseStrike)[0].strike_count == 2


def test_strikes_at_different_shops_count_separately_by_default() -> None:
    events = [checkout(f"o{i}", at(days=i), method="card", shop=f"s{i}") for i in range(3)]
    effects, _ = play(events, until=at(days=5))
    assert [s.strike_count for s in of_type(effects, RecordStrike)] == [1, 1, 1]
    assert of_type(effects, Blacklist) == []


def test_platform_scope_counts_strikes_across_shops() -> None:
    policies = Policies(UnpaidPolicy(blacklist_scope="platform"))
    events = [checkout(f"o{i}", at(days=i), method="card", shop=f"s{i}") for i in range(3)]
    effects, _ = play(events, until=at(days=5), policies=policies)
    (listing,) = of_type(effects, Blacklist)
    assert listing.scope == "*"


def test_per_shop_policy_overrides_apply_to_that_shop_only() -> None:
    policies = Policies.from_overrides(UnpaidPolicy(), {"s2": {"strike_threshold": 1}})
    effects, _ = play(
        [checkout("a", method="card", shop="s1"), checkout("b", method="card", shop="s2")],
        until=at(days=1),
        policies=policies,
    )
    assert [b.scope for b in of_type(effects, Blacklist)] == ["s2"]


def test_an_operator_can_blacklist_and_unblacklist_by_hand_with_actor_and_reason() -> None:
    effects, state = play(
        [admin("blacklist", at(0), days=7), admin("unblacklist", at(days=1))], until=at(days=2)
    )
    (listing,) = of_type(effects, Blacklist)
    assert (listing.actor, listing.reason, listing.until) == (
        "ops:alice",
        "manual check",
        at(days=7),
    )
    (ended,) = of_type(effects, Unblacklist)
    assert (ended.cause, ended.actor) == ("manual", "ops:alice")
    assert state.listings == {}


def test_a_customer_with_nothing_open_ends_with_no_state() -> None:
    effects, state = play(
        [*_three_expiries(), checkout("x", at(days=30)), payment("x", at(days=30, hours=1))],
        until=at(days=800),
    )
    assert of_type(effects, Unblacklist)
    assert state.is_empty()
    assert next_due(state, Policies()) is None


def test_next_due_points_at_the_first_reminder() -> None:
    _, state = play([checkout("o1")], until=at(0))
    assert next_due(state, Policies()) == at(hours=1)
    assert isinstance(state, UnpaidState)


def test_a_policy_can_change_the_reminder_schedule_per_payment_method() -> None:
    from hitrun.agents.policy import ReminderSchedule

    policy = UnpaidPolicy(reminders_by_method={"bank_transfer": ReminderSchedule((2 * H,), ())})
    effects, _ = play([checkout("o1")], until=at(days=2), policies=Policies(replace(policy)))
    assert [r.at for r in of_type(effects, SendReminder)] == [at(hours=2)]


def test_a_strike_carries_the_order_as_it_stood_and_the_window_it_counts_in() -> None:
    effects, _ = play(
        [
            checkout("o1", method="bank_transfer"),
            checkout("o2", method="cash_on_delivery"),
            status("o2", at(days=3), "cod_refused"),
        ],
        until=at(days=4),
    )
    expired, refused = of_type(effects, RecordStrike)
    assert expired.window == timedelta(days=90)
    assert expired.order is not None
    assert (expired.order.checkout_at, expired.order.deadline) == (T0, at(hours=24))
    assert (expired.order.method, expired.order.paid_minor) == ("bank_transfer", 0)
    assert expired.order.reminders_sent == 2
    alert = to_alert(expired)
    assert alert is not None
    assert alert.body["order"]["deadline"] == at(hours=24).isoformat()
    assert alert.body["order"]["reminders_sent"] == 2
    assert alert.body["strike"]["window_days"] == 90
    assert refused.order is not None and refused.order.deadline is None
    refused_alert = to_alert(refused)
    assert refused_alert is not None and refused_alert.body["order"]["deadline"] is None
