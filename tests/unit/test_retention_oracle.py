"""The retention oracle follows every written rule and tie rule; its generated files are honest."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.retention_oracle import (
    CUSTOMER_RETURNED,
    EARLY_CHURN,
    FIRST_PURCHASE,
    INQUIRY_ONLY,
    PROFILES,
    SINGLE_PURCHASE,
    OracleEvent,
    OraclePolicy,
    Purchase,
    expected_counts,
    expected_events,
    profile_of,
    read_purchases_csv,
    write_transactions_csv,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
W = D = timedelta(days=90)
M = timedelta(days=365)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def buys(*times: datetime, customer: str = "c1") -> list[Purchase]:
    """One purchase at each time, orders o1, o2, ... in that order."""
    return [(customer, at, f"o{i}") for i, at in enumerate(times, start=1)]


def first(at: datetime, order: str, customer: str = "c1") -> OracleEvent:
    return OracleEvent(FIRST_PURCHASE, customer, at, order_id=order)


def single(at: datetime, order: str) -> OracleEvent:
    return OracleEvent(SINGLE_PURCHASE, "c1", at, order_id=order, count=1)


def churn(at: datetime, n: int) -> OracleEvent:
    return OracleEvent(EARLY_CHURN, "c1", at, count=n)


def returned(at: datetime, order: str, flag: str, since: timedelta) -> OracleEvent:
    return OracleEvent(CUSTOMER_RETURNED, "c1", at, order_id=order, flag=flag, since_flag=since)


def inquiry_only(at: datetime, n: int) -> OracleEvent:
    return OracleEvent(INQUIRY_ONLY, "c1", at, count=n)


# --- Single purchase and the window ------------------------------------------------------


def test_a_lone_purchase_is_flagged_single_purchase_when_the_window_closes() -> None:
    assert expected_events(buys(day(0))) == [first(day(0), "o1"), single(day(90), "o1")]


def test_a_purchase_one_second_before_the_window_ends_is_inside_it() -> None:
    last = day(90) - SECOND
    assert expected_events(buys(day(0), last)) == [first(day(0), "o1"), churn(last + D, 2)]


def test_a_purchase_exactly_at_the_window_end_comes_after_the_single_purchase_flag() -> None:
    assert expected_events(buys(day(0), day(90))) == [
        first(day(0), "o1"),
        single(day(90), "o1"),
        returned(day(90), "o2", SINGLE_PURCHASE, timedelta(0)),
        single(day(180), "o2"),
    ]


# --- Early churn, watching and loyalty ---------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_two_to_five_purchases_in_the_window_then_silence_is_early_churn(n: int) -> None:
    times = [day(10 * i) for i in range(n)]
    assert expected_events(buys(*times)) == [first(day(0), "o1"), churn(times[-1] + D, n)]


def test_more_than_churn_max_purchases_make_a_loyal_customer_who_is_then_forgotten() -> None:
    loyal = [day(10 * i) for i in range(6)]
    assert expected_events(buys(*loyal, day(400))) == [
        first(day(0), "o1"),
        first(day(400), "o7"),  # forgotten at 50 + D: new again, no return
        single(day(490), "o7"),
    ]


def test_a_purchase_while_watching_is_counted_and_moves_the_dormancy_timer() -> None:
    # Watching from day 90, due at day 100; the purchase at day 92 moves it to day 182.
    assert expected_events(buys(day(0), day(10), day(92))) == [
        first(day(0), "o1"),
        churn(day(182), 3),
    ]


def test_a_purchase_while_watching_can_make_the_customer_loyal() -> None:
    five_in_window = [day(i) for i in range(5)]
    assert expected_events(buys(*five_in_window, day(93))) == [first(day(0), "o1")]
    assert expected_events(buys(*five_in_window, day(94))) == [
        first(day(0), "o1"),
        churn(day(94), 5),
        returned(day(94), "o6", EARLY_CHURN, timedelta(0)),
        single(day(184), "o6"),
    ]


def test_the_churn_timer_never_fires_before_the_window_ends() -> None:
    short_dormancy = OraclePolicy(dormancy=timedelta(days=30))
    events = expected_events(buys(day(0), day(10)), policy=short_dormancy)
    assert events == [first(day(0), "o1"), churn(day(90), 2)]  # not at day 40


def test_the_churn_range_comes_from_the_policy() -> None:
    three_to_four = OraclePolicy(churn_min=3, churn_max=4)
    assert expected_events(buys(day(0), day(1)), policy=three_to_four) == [first(day(0), "o1")]
    assert expected_events(buys(day(0), day(1), day(2), day(3)), policy=three_to_four) == [
        first(day(0), "o1"),
        churn(day(93), 4),
    ]


def test_a_purchase_exactly_at_last_plus_dormancy_comes_after_the_early_churn() -> None:
    assert expected_events(buys(day(0), day(10), day(100))) == [
        first(day(0), "o1"),
        churn(day(100), 2),
        returned(day(100), "o3", EARLY_CHURN, timedelta(0)),
        single(day(190), "o3"),
    ]


# --- Flags, returns and forgetting -------------------------------------------------------


def test_a_return_after_a_single_purchase_flag_opens_a_new_cycle_without_a_first_purchase() -> None:
    assert expected_events(buys(day(0), day(120), day(130))) == [
        first(day(0), "o1"),
        single(day(90), "o1"),
        returned(day(120), "o2", SINGLE_PURCHASE, timedelta(days=30)),
        churn(day(220), 2),
    ]


def test_a_return_after_early_churn_carries_the_early_churn_flag() -> None:
    assert expected_events(buys(day(0), day(10), day(150))) == [
        first(day(0), "o1"),
        churn(day(100), 2),
        returned(day(150), "o3", EARLY_CHURN, timedelta(days=50)),
        single(day(240), "o3"),
    ]


def test_a_purchase_one_second_before_the_flag_is_forgotten_is_a_return() -> None:
    back = day(90) + M - SECOND
    assert expected_events(buys(day(0), back))[2] == returned(
        back, "o2", SINGLE_PURCHASE, M - SECOND
    )


def test_a_purchase_exactly_when_the_flag_is_forgotten_is_a_first_purchase_again() -> None:
    back = day(90) + M
    assert expected_events(buys(day(0), back)) == [
        first(day(0), "o1"),
        single(day(90), "o1"),
        first(back, "o2"),
        single(back + W, "o2"),
    ]


# --- Inquiries ---------------------------------------------------------------------------


def test_inquiries_without_a_purchase_end_in_inquiry_only_with_their_count() -> None:
    asked = [("c1", day(0)), ("c1", day(10)), ("c1", day(90) - SECOND), ("c1", day(95))]
    assert expected_events([], asked) == [inquiry_only(day(90), 3), inquiry_only(day(185), 1)]


def test_a_purchase_inside_the_inquiry_window_closes_it_silently() -> None:
    assert expected_events(buys(day(30)), [("c1", day(0)), ("c1", day(20))]) == [
        first(day(30), "o1"),
        single(day(120), "o1"),
    ]


def test_a_purchase_exactly_at_the_inquiry_window_end_comes_after_inquiry_only() -> None:
    assert expected_events(buys(day(90)), [("c1", day(0))]) == [
        inquiry_only(day(90), 1),
        first(day(90), "o1"),
        single(day(180), "o1"),
    ]


def test_inquiries_of_a_customer_in_a_cycle_or_flagged_are_ignored_until_forgotten() -> None:
    asked = [("c1", day(10)), ("c1", day(100)), ("c1", day(455) - SECOND), ("c1", day(500))]
    assert expected_events(buys(day(0)), asked) == [
        first(day(0), "o1"),
        single(day(90), "o1"),
        inquiry_only(day(590), 1),  # forgotten at day 455, new again
    ]


# --- Input handling ----------------------------------------------------------------------


def test_a_repeated_order_of_a_customer_counts_once_at_its_earliest_time() -> None:
    repeated = [("c1", day(10), "o1"), ("c1", day(0), "o1"), ("c1", day(0), "o1")]
    assert expected_events(repeated) == [first(day(0), "o1"), single(day(90), "o1")]


def test_the_same_order_id_of_two_customers_is_two_orders() -> None:
    assert expected_counts([("c1", day(0), "o1"), ("c2", day(0), "o1")])[FIRST_PURCHASE] == 2


def test_purchases_at_one_instant_are_taken_in_order_id_order() -> None:
    events = expected_events([("c1", day(0), "b"), ("c1", day(0), "a")])
    assert events == [first(day(0), "a"), churn(day(90), 2)]


def test_the_input_order_does_not_change_the_events() -> None:
    purchases = [
        *buys(day(0), day(10), day(150), day(90) + M * 2),
        *buys(day(3), day(93), customer="c2"),
    ]
    shuffled = purchases[:]
    random.Random(5).shuffle(shuffled)
    assert expected_events(shuffled) == expected_events(purchases)


def test_events_are_sorted_by_time_then_customer() -> None:
    events = expected_events([*buys(day(5), customer="c2"), *buys(day(5), day(1), customer="c1")])
    assert [(e.at, e.customer_id) for e in events] == [
        (day(1), "c1"),
        (day(5), "c2"),
        (day(95), "c1"),
        (day(95), "c2"),
    ]


def test_counts_are_the_kinds_of_the_events() -> None:
    counts = expected_counts(buys(day(0), day(90)), [("c2", day(0))])
    assert dict(counts) == {
        FIRST_PURCHASE: 1,
        SINGLE_PURCHASE: 2,
        CUSTOMER_RETURNED: 1,
        INQUIRY_ONLY: 1,
    }


# --- The end of what is known ------------------------------------------------------------


def test_a_timer_due_exactly_at_the_end_fires() -> None:
    assert expected_events(buys(day(0)), end=day(90)) == [
        first(day(0), "o1"),
        single(day(90), "o1"),
    ]


def test_a_timer_due_after_the_end_does_not_fire() -> None:
    assert expected_events(buys(day(0)), end=day(90) - SECOND) == [first(day(0), "o1")]


def test_a_purchase_at_or_after_the_end_is_not_known() -> None:
    assert expected_events(buys(day(0), day(90), day(91)), end=day(90)) == [
        first(day(0), "o1"),
        single(day(90), "o1"),
    ]
    assert expected_events([], [("c1", day(3))], end=day(3)) == []


TIMER_KINDS = {SINGLE_PURCHASE, EARLY_CHURN, INQUIRY_ONLY}
acts = st.lists(
    st.tuples(st.sampled_from(["c1", "c2"]), st.integers(0, 900), st.sampled_from("abcdefg")),
    max_size=12,
)


@given(purchases=acts, asked=acts, end_day=st.integers(0, 1000))
@settings(max_examples=300, deadline=None)
def test_stopping_at_an_end_keeps_what_happened_before_it_and_the_timers_due_at_it(
    purchases: list[tuple[str, int, str]], asked: list[tuple[str, int, str]], end_day: int
) -> None:
    bought = [(c, day(n), order) for c, n, order in purchases]
    inquiries = [(c, day(n)) for c, n, _ in asked]
    end = day(end_day)
    everything = expected_events(bought, inquiries)
    assert expected_events(bought, inquiries, end=end) == [
        e for e in everything if e.at < end or (e.at == end and e.kind in TIMER_KINDS)
    ]


@given(purchases=acts)
@example(purchases=[("c1", 0, o) for o in "abcefg"] + [("c1", 90, "d")])  # loyal, then new
@settings(max_examples=300, deadline=None)
def test_every_return_follows_its_flag_within_the_flag_memory(
    purchases: list[tuple[str, int, str]],
) -> None:
    events = expected_events([(c, day(n), order) for c, n, order in purchases])
    flags = {(e.customer_id, e.kind, e.at) for e in events if e.kind in TIMER_KINDS}
    # A cycle opens with a first purchase or a return; it ends with at most one flag, or
    # silently when the customer proved loyal (the next purchase is a first purchase again).
    open_cycle: dict[str, bool] = defaultdict(bool)
    for e in events:
        if e.kind == CUSTOMER_RETURNED:
            assert e.since_flag is not None
            assert timedelta(0) <= e.since_flag < M
            assert (e.customer_id, e.flag, e.at - e.since_flag) in flags
        if e.kind in (FIRST_PURCHASE, CUSTOMER_RETURNED):
            open_cycle[e.customer_id] = True
        if e.kind in (SINGLE_PURCHASE, EARLY_CHURN):
            assert open_cycle[e.customer_id]  # a cycle ends at most once, after it opened
            open_cycle[e.customer_id] = False


# --- The generated transactions file -----------------------------------------------------

START = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT = OraclePolicy()
SHORT = OraclePolicy(
    window=timedelta(hours=2),
    dormancy=timedelta(hours=3),
    churn_min=2,
    churn_max=4,
    flag_memory=timedelta(days=1),
)


def generated(tmp_path: Path, seed: int = 1, policy: OraclePolicy = DEFAULT) -> Path:
    path = tmp_path / f"transactions-{seed}.csv"
    write_transactions_csv(path, seed=seed, customers=300, start=START, policy=policy)
    return path


def test_the_generated_file_gives_every_purchase_event_kind_for_seed_1(tmp_path: Path) -> None:
    counts = expected_counts(read_purchases_csv(generated(tmp_path)))
    kinds = (FIRST_PURCHASE, SINGLE_PURCHASE, EARLY_CHURN, CUSTOMER_RETURNED)
    assert all(counts[kind] > 0 for kind in kinds), counts


def test_the_same_seed_writes_byte_identical_files_and_another_seed_does_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    once = generated(tmp_path / "a").read_bytes()
    again = generated(tmp_path / "b").read_bytes()
    other = generated(tmp_path, seed=2).read_bytes()
    assert once == again
    assert once != other


ROW = re.compile(
    r"^[a-z-]+-\d{5},\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00,\d+\.\d\d,[a-z-]+-\d{5}-\d+$"
)


def test_the_file_has_one_row_per_order_in_time_order_with_rfc3339_times(tmp_path: Path) -> None:
    lines = generated(tmp_path).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "customer_id,timestamp,amount,order_id"
    assert all(ROW.match(line) for line in lines[1:]), [x for x in lines[1:] if not ROW.match(x)]
    times = [line.split(",")[1] for line in lines[1:]]
    assert times == sorted(times)
    orders = [line.split(",")[3] for line in lines[1:]]
    assert len(set(orders)) == len(orders)


def test_reading_the_file_back_gives_the_purchases_written(tmp_path: Path) -> None:
    path = generated(tmp_path)
    rows = [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    purchases = read_purchases_csv(path)
    assert purchases == [
        (customer, datetime.fromisoformat(at), order) for customer, at, _, order in rows
    ]
    assert all(at.utcoffset() == timedelta(0) and at.microsecond == 0 for _, at, _ in purchases)
    assert len(purchases) > 300


def kinds_of(events: list[OracleEvent]) -> dict[str, list[OracleEvent]]:
    by_customer: dict[str, list[OracleEvent]] = defaultdict(list)
    for e in events:
        by_customer[e.customer_id].append(e)
    return by_customer


@pytest.mark.parametrize("policy", [DEFAULT, SHORT], ids=["default", "short"])
def test_each_generated_customer_does_what_its_profile_says(
    tmp_path: Path, policy: OraclePolicy
) -> None:
    purchases = read_purchases_csv(generated(tmp_path, policy=policy))
    bought: dict[str, int] = defaultdict(int)
    for customer, _, _ in purchases:
        bought[customer] += 1
    assert {profile_of(c) for c in bought} == set(PROFILES)

    events = kinds_of(expected_events(purchases, policy=policy))
    churning = range(policy.churn_min, policy.churn_max + 1)
    for customer, n in bought.items():
        mine = events[customer]
        kinds = [e.kind for e in mine]
        match profile_of(customer):
            case "single":
                assert kinds == [FIRST_PURCHASE, SINGLE_PURCHASE]
            case "churn":
                assert kinds == [FIRST_PURCHASE, EARLY_CHURN]
                assert mine[1].count == n and n in churning
            case "loyal":
                assert kinds == [FIRST_PURCHASE]
                assert n > policy.churn_max
            case "back-single" | "back-churn" as profile:
                flag = SINGLE_PURCHASE if profile == "back-single" else EARLY_CHURN
                assert kinds[:3] == [FIRST_PURCHASE, flag, CUSTOMER_RETURNED]
                assert mine[2].flag == flag
                assert mine[2].since_flag is not None
                assert timedelta(0) < mine[2].since_flag < policy.flag_memory
            case "forgotten" | "edge-memory" as profile:
                assert kinds[:3] == [FIRST_PURCHASE, mine[1].kind, FIRST_PURCHASE]
                assert mine[1].kind in (SINGLE_PURCHASE, EARLY_CHURN)
                assert CUSTOMER_RETURNED not in kinds
                forgotten_at = mine[1].at + policy.flag_memory
                if profile == "edge-memory":
                    assert mine[2].at == forgotten_at
                else:
                    assert mine[2].at > forgotten_at
            case "edge-window":
                assert kinds == [
                    FIRST_PURCHASE,
                    SINGLE_PURCHASE,
                    CUSTOMER_RETURNED,
                    SINGLE_PURCHASE,
                ]
                assert (mine[2].flag, mine[2].since_flag) == (SINGLE_PURCHASE, timedelta(0))
            case "edge-dormancy":
                assert kinds == [FIRST_PURCHASE, EARLY_CHURN, CUSTOMER_RETURNED, SINGLE_PURCHASE]
                assert (mine[2].flag, mine[2].since_flag) == (EARLY_CHURN, timedelta(0))
            case "mixed":
                assert kinds[0] == FIRST_PURCHASE
            case other:
                pytest.fail(f"no expectation for profile {other}")
