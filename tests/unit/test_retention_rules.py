"""Single purchase, early churn, returns and inquiry-only, as defined in agents/retention.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.retention import (
    FlagEarlyChurn,
    FlagInquiryOnly,
    FlagSinglePurchase,
    ReportReturn,
    RetentionEffect,
    RetentionPolicy,
    RetentionState,
    advance,
    inquiry,
    next_due,
    purchase,
    refund,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetentionPolicy()
END = T0 + timedelta(days=2000)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def play(
    actions: list[tuple[float, str, str]], until: datetime = END, policy: RetentionPolicy = POLICY
) -> tuple[list[RetentionEffect], RetentionState]:
    """(day, kind, order) actions in time order; timers due first, as the agent does."""
    state = RetentionState()
    out: list[RetentionEffect] = []
    for when, kind, order in sorted(actions):
        out += advance(state, "c1", day(when), policy)
        if kind == "buy":
            out += purchase(state, "c1", order, day(when), 1000, "IDR")
        elif kind == "refund":
            refund(state, order)
        elif kind == "ask":
            inquiry(state, day(when))
    # Fire everything due by `until`, one timer at a time like the deadline index;
    # each timer must change the state, or the index would fire it forever.
    for _ in range(1000):
        due = next_due(state, policy)
        if due is None or due > until:
            break
        out += advance(state, "c1", due, policy)
        assert next_due(state, policy) != due, "a due timer made no progress"
    else:
        raise AssertionError("timers did not settle")
    return out, state


def test_one_purchase_in_the_window_is_flagged_at_its_end() -> None:
    effects, _ = play([(0, "buy", "o1")])
    (flag,) = [e for e in effects if isinstance(e, FlagSinglePurchase)]
    assert (flag.order_id, flag.at) == ("o1", day(90))


def test_two_purchases_in_the_window_are_not_a_single_purchase() -> None:
    effects, _ = play([(0, "buy", "o1"), (89, "buy", "o2")])
    assert not [e for e in effects if isinstance(e, FlagSinglePurchase)]


def test_a_purchase_exactly_at_the_window_end_is_outside_it() -> None:
    effects, _ = play([(0, "buy", "o1"), (90, "buy", "o2")])
    assert [type(e) for e in effects][:2] == [FlagSinglePurchase, ReportReturn]


def test_two_to_five_purchases_then_dormancy_is_early_churn() -> None:
    effects, _ = play([(0, "buy", "o1"), (30, "buy", "o2"), (60, "buy", "o3")])
    (churn,) = [e for e in effects if isinstance(e, FlagEarlyChurn)]
    assert (churn.purchases, churn.last_purchase_at, churn.at) == (3, day(60), day(150))


def test_a_loyal_customer_is_not_early_churn() -> None:
    effects, state = play([(n * 20, "buy", f"o{n}") for n in range(6)])
    assert not [e for e in effects if isinstance(e, FlagEarlyChurn | FlagSinglePurchase)]
    assert state.is_empty()


def test_a_flagged_customer_who_buys_again_is_reported_returned() -> None:
    effects, _ = play([(0, "buy", "o1"), (120, "buy", "o2")], until=day(121))
    (back,) = [e for e in effects if isinstance(e, ReportReturn)]
    assert (back.flag, back.flagged_at, back.order_id) == ("single_purchase", day(90), "o2")


def test_a_refunded_only_purchase_leaves_nothing_to_flag() -> None:
    effects, state = play([(0, "buy", "o1"), (5, "refund", "o1")])
    assert effects == []
    assert state.is_empty()


def test_inquiries_without_a_purchase_are_inquiry_only_at_the_window_end() -> None:
    effects, _ = play([(0, "ask", ""), (10, "ask", "")])
    (flag,) = effects
    assert isinstance(flag, FlagInquiryOnly)
    assert (flag.first_inquiry_at, flag.at) == (day(0), day(90))


def test_an_inquiry_followed_by_a_purchase_is_not_inquiry_only() -> None:
    effects, _ = play([(0, "ask", ""), (10, "buy", "o1")])
    assert not [e for e in effects if isinstance(e, FlagInquiryOnly)]


def test_flags_are_forgotten_after_the_flag_memory() -> None:
    _, state = play([(0, "buy", "o1")])
    assert state.is_empty()


actions = st.lists(
    st.tuples(
        st.integers(0, 400),
        st.sampled_from(["buy", "buy", "refund", "ask"]),
        st.sampled_from(["a", "b", "c", "d"]),
    ),
    max_size=15,
)


@settings(max_examples=200, deadline=None)
@given(actions)
def test_at_most_one_single_purchase_flag_per_window(acts: list[tuple[int, str, str]]) -> None:
    effects, _ = play([(float(d), k, f"{o}{d}" if k == "buy" else o) for d, k, o in acts])
    windows = [e.first_purchase_at for e in effects if isinstance(e, FlagSinglePurchase)]
    assert len(windows) == len(set(windows))


@settings(max_examples=200, deadline=None)
@given(actions)
def test_two_kept_purchases_inside_a_window_never_give_a_single_purchase_flag(
    acts: list[tuple[int, str, str]],
) -> None:
    buys = [(float(d), "buy", f"o{i}") for i, (d, k, _) in enumerate(acts) if k == "buy"]
    effects, _ = play(buys)
    for flag in (e for e in effects if isinstance(e, FlagSinglePurchase)):
        inside = [d for d, _, _ in buys if flag.first_purchase_at <= day(d) < flag.at]
        assert len(inside) == 1


@settings(max_examples=100, deadline=None)
@given(actions)
def test_the_same_transactions_give_the_same_events(acts: list[tuple[int, str, str]]) -> None:
    events = [(float(d), k, o) for d, k, o in acts]
    assert play(events)[0] == play(list(events))[0]
