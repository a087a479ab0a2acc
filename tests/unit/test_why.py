"""The decision trail support staff read (`GET /customers/{id}/why`, `hitrun why`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.unpaid import Listing, Offences, OpenOrder, Strike, UnpaidState
from hitrun.agents.why import explain
from hitrun.streams.why_command import render

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
POLICIES = Policies(UnpaidPolicy(), {"shop-strict": replace(UnpaidPolicy(), strike_threshold=2)})


def test_each_strike_counts_towards_its_list_and_the_blacklisting_names_its_orders() -> None:
    state = UnpaidState(
        strikes=[
            Strike("o-1", "shop-strict", "shop-strict", T0, "unpaid"),
            Strike("o-2", "shop-strict", "shop-strict", T0 + HOUR, "cod_refused", reversed=True),
            Strike("o-3", "shop-strict", "shop-strict", T0 + 2 * HOUR, "cod_refused"),
        ],
        listings={
            "shop-strict": Listing(
                "shop-strict",
                T0 + 2 * HOUR,
                T0 + timedelta(days=92),
                1,
                False,
                "hitrun",
                ["o-1", "o-3"],
            )
        },
        offences={"shop-strict": Offences(1)},
    )
    trail = explain("c-1", state, POLICIES)
    assert trail["blacklisted_on"] == ["shop-strict"]
    decisions = trail["decisions"]
    assert [(d["decision"], d.get("order_id")) for d in decisions] == [
        ("strike", "o-1"),
        ("strike_reversed", "o-2"),
        ("strike", "o-3"),
        ("blacklisted", None),
    ]
    first, reversed_, third, listing = decisions
    assert first["text"] == (
        "strike 1 of 2 on shop shop-strict's list: order o-1 at shop-strict was not paid "
        "by its payment deadline"
    )
    assert "reversed" in reversed_["text"] and "counts for nothing" in reversed_["text"]
    # The reversed strike does not count: o-3 is the second.
    assert third["count"] == 2 and "refused at the door" in third["text"]
    assert listing["evidence"] == ["o-1", "o-3"]
    assert listing["text"].endswith("after 2 strikes within 90d: orders o-1, o-3")
    assert trail["policies"]["shop-strict"]["strike_threshold"] == 2


def test_a_manual_blacklisting_names_its_operator_and_an_ended_one_is_shown() -> None:
    state = UnpaidState(
        listings={"*": Listing("*", T0, T0 + timedelta(days=30), 2, True, "ops-alice")},
        offences={
            "*": Offences(2, last_end=T0 - timedelta(days=1)),
            "shop-a": Offences(1, T0 - HOUR),
        },
    )
    decisions = explain("c-2", state, POLICIES)["decisions"]
    assert [d["decision"] for d in decisions] == ["blacklisting_ended", "blacklisted"]
    assert decisions[0]["scope"] == "shop-a"
    assert decisions[1]["text"] == (
        f"blacklisted on the platform's list until {(T0 + timedelta(days=30)).isoformat()} "
        "(offence 2) by ops-alice (a manual decision)"
    )


def test_open_orders_show_what_is_due_and_by_when() -> None:
    state = UnpaidState(
        open={
            "o-card": OpenOrder(
                "o-card",
                "shop-a",
                T0,
                T0 + HOUR,
                5000,
                "IDR",
                "card",
                None,
                paid_minor=1000,
                reminders_sent=1,
            ),
            "o-cod": OpenOrder(
                "o-cod", "shop-a", T0 - HOUR, None, 700, "IDR", "cash_on_delivery", None
            ),
        }
    )
    trail = explain("c-3", state, POLICIES)
    cod, card = trail["decisions"]
    assert card["text"] == (
        f"order o-card at shop-a: 4000 IDR (minor units) due, payment deadline "
        f"{(T0 + HOUR).isoformat()} (1h for card); 1 reminder(s) sent"
    )
    assert "no payment deadline" in cod["text"]
    assert trail["blacklisted_on"] == []
    printed = render(trail)
    assert printed.splitlines()[0] == "customer c-3: not blacklisted"
    assert "policy of shop-a: 3 strikes within 90d blacklist for 90d (shop list)" in printed
    assert "card 1h" in printed and "cash_on_delivery none" in printed
