"""Single purchase, early churn, returns and inquiry-only, as defined in agents/retention.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from hitrun.agents.alerts import retention_alert
from hitrun.agents.retention import (
    FlagEarlyChurn,
    FlagInquiryOnly,
    FlagSinglePurchase,
    Purchase,
    ReportReturn,
    RetentionEffect,
    RetentionPolicy,
    RetentionState,
    WarnFirstPurchase,
    advance,
    checkout,
    inquiry,
    next_due,
    purchase,
    refund,
)
from hitrun.agents.risk import OrderTraits
from hitrun.agents.state import CustomerState, decode_state, encode_state
from hitrun.schemas import compiled_validator
from tests.retention_oracle import OraclePolicy, expected_events
from tests.unit.events import as_version_1

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetentionPolicy()
END = T0 + timedelta(days=2000)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def play(
    actions: list[tuple[float, str, str]],
    until: datetime = END,
    policy: RetentionPolicy = POLICY,
    state: RetentionState | None = None,
) -> tuple[list[RetentionEffect], RetentionState]:
    """(day, kind, order) actions in time order; timers due first, as the agent does."""
    state = state if state is not None else RetentionState()
    out: list[RetentionEffect] = []
    for when, kind, order in sorted(actions):
        out += advance(state, "c1", day(when), policy)
        if kind == "buy":
            out += purchase(state, "c1", Purchase(order, "s1", day(when), 1000, "IDR"), policy)
        elif kind == "refund":
            refund(state, order, None)
        elif kind == "ask":
            inquiry(state, "s1", day(when))
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
    assert [type(e) for e in effects][:3] == [WarnFirstPurchase, FlagSinglePurchase, ReportReturn]


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
    assert [type(e) for e in effects] == [WarnFirstPurchase]
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


@settings(max_examples=100, deadline=None)
@given(actions)
def test_every_retention_alert_validates_against_its_schema_with_a_unique_id(
    acts: list[tuple[int, str, str]],
) -> None:
    effects, _ = play([(float(d), k, f"{o}{d}" if k == "buy" else o) for d, k, o in acts])
    alerts = [retention_alert(e) for e in effects]
    for alert in alerts:
        compiled_validator(f"{alert.type}.v1")(alert.body)
        assert alert.role == "retention" and alert.key == "c1"
    assert len({a.body["alert_id"] for a in alerts}) == len(alerts)


@settings(max_examples=100, deadline=None)
@given(actions, st.integers(0, 400))
def test_a_state_stored_and_restored_mid_stream_gives_the_same_events(
    acts: list[tuple[int, str, str]], cut: int
) -> None:
    moves = sorted((float(d), k, f"{o}{d}" if k == "buy" else o) for d, k, o in acts)
    straight, _ = play(moves)
    first, state = play([m for m in moves if m[0] <= cut], until=day(cut))
    restored = decode_state(encode_state(CustomerState(retention=state))).retention
    assert restored == state
    # As the revision before the versioned codec wrote it: a changelog being upgraded.
    assert decode_state(as_version_1(CustomerState(retention=state))).retention == state
    rest, _ = play([m for m in moves if m[0] > cut], state=restored)
    assert first + rest == straight


def traits(order: str, at: datetime, **kw: object) -> OrderTraits:
    base: dict[str, object] = {
        "gift": False,
        "traffic_source": "direct",
        "promotion": False,
        "categories": ("shoes", "books"),
        "accessory_only": False,
    }
    return OrderTraits(order, at, **(base | kw))  # type: ignore[arg-type]


def buy(state: RetentionState, order: str, at: datetime) -> list[RetentionEffect]:
    effects = advance(state, "c1", at, POLICY)
    return effects + purchase(state, "c1", Purchase(order, "s1", at, 1000, "IDR"), POLICY)


def test_the_first_purchase_is_scored_from_its_own_checkout_and_the_first_day() -> None:
    state = RetentionState()
    checkout(state, traits("o0", day(0), promotion=True))
    checkout(state, traits("o1", day(0.5), gift=True, traffic_source="ad"))
    (warn,) = buy(state, "o1", day(0.6))
    assert isinstance(warn, WarnFirstPurchase)
    assert warn.factors == ("gift_shipping", "search_or_ad_arrival", "several_orders_first_day")
    assert warn.orders_first_day == 2
    assert 0 < warn.score < 1
    assert state.traits == []  # served: a cycle is open
    (flag,) = [
        e for e in advance(state, "c1", day(91), POLICY) if isinstance(e, FlagSinglePurchase)
    ]
    assert flag.factors == warn.factors and flag.score == warn.score


def test_a_return_opens_a_cycle_without_a_first_purchase_warning() -> None:
    state = RetentionState()
    buy(state, "o1", day(0))
    effects = buy(state, "o2", day(100))
    assert [type(e) for e in effects] == [FlagSinglePurchase, ReportReturn]


def test_checkout_traits_of_an_unpaid_order_are_dropped_after_the_trait_memory() -> None:
    state = RetentionState()
    checkout(state, traits("o1", day(0)))
    assert next_due(state, POLICY) == day(0) + POLICY.trait_memory
    assert advance(state, "c1", day(8), POLICY) == []
    assert state.is_empty()


def test_a_partial_refund_keeps_the_purchase() -> None:
    state = RetentionState()
    buy(state, "o1", day(0))
    buy(state, "o2", day(10))
    refund(state, "o2", 999)
    assert len(state.purchases) == 2
    refund(state, "o2", 1000)
    assert [p.order_id for p in state.purchases] == ["o1"]


def test_inquiries_are_counted_and_a_customer_in_a_cycle_opens_no_inquiry_window() -> None:
    state = RetentionState()
    for d in (0, 3, 7):
        inquiry(state, "s1", day(d))
    (flag,) = advance(state, "c1", day(90), POLICY)
    assert isinstance(flag, FlagInquiryOnly) and flag.inquiries == 3
    buy(state, "o1", day(100))
    inquiry(state, "s1", day(101))
    assert state.inquiry_at is None


def _as_oracle(effect: RetentionEffect) -> tuple[str, datetime, str]:
    if isinstance(effect, WarnFirstPurchase):
        return ("first_purchase", effect.at, effect.order_id)
    if isinstance(effect, FlagSinglePurchase):
        return ("single_purchase", effect.at, effect.order_id)
    if isinstance(effect, FlagEarlyChurn):
        return ("early_churn", effect.at, "")
    if isinstance(effect, ReportReturn):
        return ("customer_returned", effect.at, effect.order_id)
    return ("inquiry_only", effect.at, "")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 900), st.sampled_from(["buy", "buy", "buy", "ask"])),
        max_size=14,
    )
)
def test_the_core_agrees_with_the_independent_oracle(moves: list[tuple[int, str]]) -> None:
    # Whole days so that every tie rule (window end, dormancy end, flag memory end) gets hit.
    acts = [(float(d), k, f"o{i}") for i, (d, k) in enumerate(moves)]
    effects, _ = play(acts)
    oracle = expected_events(
        [("c1", day(d), o) for d, k, o in acts if k == "buy"],
        [("c1", day(d)) for d, k, _ in acts if k == "ask"],
        policy=OraclePolicy(),
    )
    assert [_as_oracle(e) for e in effects] == [
        (e.kind, e.at, e.order_id if e.kind != "early_churn" else "") for e in oracle
    ]
