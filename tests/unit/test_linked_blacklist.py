"""Blacklistings that follow strong links, without Kafka: `linked_accounts: blacklist` (the
linked account's blacklisting extends to the customer) and `linked_strikes: shared` (the
strikes of linked accounts count together).

Each customer here has a whole state (its blacklist and its links); sightings and
reports go through the two stages in memory, as tests/unit/test_identity.py does.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from hitrun.agents import identity, unpaid
from hitrun.agents.alerts import to_alert
from hitrun.agents.effects import Blacklist, Effect, RecordStrike, ReverseStrike, Unblacklist
from hitrun.agents.identity import IdentifierState, LinkEffect, LinkPolicy, Report
from hitrun.agents.linking import LinkRules
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.state import CustomerState, decode_state, encode_state
from hitrun.agents.why import explain
from hitrun.schemas import compiled_validator
from hitrun.schemas.records import AdminActionRequested, CustomerEvent
from tests.unit.events import checkout, payment

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
LINKS = LinkPolicy()


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class World:
    """Customers with whole states, glued as the agent glues them (agents/customer.py)."""

    def __init__(
        self, linked_accounts: str = "blacklist", linked_strikes: str = "separate"
    ) -> None:
        self.policies = Policies(
            UnpaidPolicy(linked_accounts=linked_accounts, linked_strikes=linked_strikes)
        )
        self.identifiers: dict[bytes, IdentifierState] = {}
        self.customers: dict[str, CustomerState] = {}
        self.effects: list[Effect] = []
        self.links: list[LinkEffect] = []
        # Reports kept back (`hold`) until `deliver`: the customer's partition went on
        # while they were on their way.
        self.held: list[Report] | None = None

    @property
    def rules(self) -> LinkRules:
        return LinkRules(self.policies, LINKS)

    def state(self, customer: str) -> CustomerState:
        return self.customers.setdefault(customer, CustomerState())

    def event(self, customer: str, at: datetime, **ids: str) -> None:
        self.advance(customer, at)
        self.announce(customer, ids, at)

    def announce(self, customer: str, ids: dict[str, str] | None, at: datetime) -> None:
        state = self.state(customer)
        for seen in self.rules.announce(customer, state, ids, at, again=ids is None):
            ident = self.identifiers.setdefault(seen.key, IdentifierState())
            for report in identity.sight(ident, seen, LINKS):
                if self.held is None:
                    self.receive(report)
                else:
                    self.held.append(report)

    def hold(self) -> None:
        self.held = []

    def deliver(self) -> None:
        held, self.held = self.held or [], None
        for report in held:
            self.receive(report)

    def receive(self, report: Report) -> None:
        effects, changes = self.rules.hear(report.customer, self.state(report.customer), report)
        self.links += effects
        self.changed(report.customer, changes)

    def handle(self, customer: str, event: CustomerEvent) -> None:
        self.advance(customer, event.occurred_at)
        state = self.state(customer)
        state.unpaid, effects = unpaid.handle(state.unpaid, event, self.policies)
        follows = self.rules.follow(customer, state, [], event.occurred_at)
        self.changed(customer, effects + follows)

    def admin(self, customer: str, action: str, at: datetime, days: int | None = None) -> None:
        event = AdminActionRequested(
            event_id=f"admin-{customer}-{action}-{at.isoformat()}",
            occurred_at=at,
            customer_id=customer,
            shop_id="shop-1",
            action=action,
            actor="ops@shop-1",
            reason="test",
            duration_days=days,
        )
        self.handle(customer, event)

    def unpaid_order(self, customer: str, order: str, at: datetime) -> None:
        """A bank transfer that will expire unpaid a day later (a strike, at `at` + 1 day)."""
        self.handle(customer, checkout(order, at, customer=customer, shop="shop-1", due=at + DAY))

    def pay(self, customer: str, order: str, at: datetime) -> None:
        paid = payment(order, at, customer=customer, shop="shop-1")
        self.handle(customer, paid)

    def advance(self, customer: str, now: datetime) -> None:
        state = self.state(customer)
        unlinked = self.rules.age(customer, state, now)
        self.links += unlinked
        changes = self.rules.follow(customer, state, unlinked, now)
        state.unpaid, effects = unpaid.advance(state.unpaid, customer, now, self.policies)
        self.changed(customer, changes + effects)

    def changed(self, customer: str, effects: list[Effect]) -> None:
        self.effects += effects
        # As the agent does: a change of the customer's own listings (or strikes, when
        # they are shared) is announced again.
        own = [
            e.since if isinstance(e, Blacklist) else e.at
            for e in effects
            if isinstance(e, Blacklist | Unblacklist) and e.linked_to is None
        ]
        if self.rules.shares_strikes:
            own += [e.at for e in effects if isinstance(e, RecordStrike | ReverseStrike)]
        if own:
            self.announce(customer, None, max(own))

    def listings(self, customer: str) -> dict[str, tuple[datetime, datetime, str | None]]:
        return {
            scope: (listing.since, listing.until, listing.linked_to)
            for scope, listing in self.state(customer).unpaid.listings.items()
        }

    def of(self, kind: type, customer: str) -> list[Effect]:
        return [e for e in self.effects if isinstance(e, kind) and e.customer_id == customer]


def evader(w: World) -> None:
    """`old` is blacklisted by an operator at T0 + 1 day (90 days); `new` comes back with
    the same phone on day 10."""
    w.event("old", T0, phone=h("+62811"))
    w.admin("old", "blacklist", T0 + DAY)
    w.event("new", T0 + 10 * DAY, phone=h("+62811"), email=h("fresh@x"))


def test_the_blacklisting_follows_a_strong_link_for_as_long_as_it_lasts() -> None:
    w = World()
    evader(w)
    end = T0 + DAY + timedelta(days=90)
    assert w.listings("new") == {"shop-1": (T0 + 10 * DAY, end, "old")}
    (blacklisted,) = w.of(Blacklist, "new")
    alert = to_alert(blacklisted)
    assert alert is not None
    compiled_validator("customer_blacklisted.v2")(alert.body)
    assert alert.body["linked_customer_ids"] == ["old"]
    assert alert.body["evidence"] == [] and alert.body["actor"] == "hitrun"
    assert "linked to account old" in alert.body["reason"]
    # It ends with the old account's blacklisting, as no offence of the new one's.
    w.advance("new", end + DAY)
    (ended,) = w.of(Unblacklist, "new")
    assert (ended.at, ended.cause, ended.linked_to) == (end, "expired", "old")
    unblacklisted = to_alert(ended)
    assert unblacklisted is not None
    compiled_validator("customer_unblacklisted.v2")(unblacklisted.body)
    # The blacklisting that ends, as its evidence, with the account it rested on.
    assert unblacklisted.body["linked_customer_ids"] == ["old"]
    assert unblacklisted.body["blacklisting"] == {
        "since": (T0 + 10 * DAY).isoformat(),
        "until": end.isoformat(),
        "offence": 1,
        "order_ids": [],
    }
    assert w.state("new").unpaid.offences == {}


def test_with_the_default_policy_a_link_only_flags() -> None:
    w = World(linked_accounts="flag")
    evader(w)
    assert w.listings("new") == {}
    assert any(isinstance(e, identity.LinkedAccountFlagged) for e in w.links)


def test_an_old_blacklisting_cut_short_ends_the_one_it_extended() -> None:
    w = World()
    evader(w)
    lifted = T0 + 20 * DAY
    w.admin("old", "unblacklist", lifted)
    # The new account hears of it with the next report of the link (its next event).
    w.event("new", T0 + 30 * DAY, phone=h("+62811"))
    ended = w.of(Unblacklist, "new")
    assert [(e.at, e.linked_to) for e in ended] == [(lifted, "old")]
    assert w.listings("new") == {}


def test_a_link_that_ages_out_ends_the_blacklisting_through_it() -> None:
    # The old account's blacklisting lasts longer than the link's evidence.
    w = World()
    w.policies = Policies(UnpaidPolicy(linked_accounts="blacklist", blacklist_duration=900 * DAY))
    evader(w)
    aged = T0 + 10 * DAY + LINKS.window  # the new account's phone, as last seen with the old
    w.advance("new", aged + DAY)
    (ended,) = w.of(Unblacklist, "new")
    assert ended.linked_to == "old" and ended.at <= aged + DAY
    assert ended.at >= T0 + LINKS.window  # not before the link's evidence aged out


def clock_past_a_linked_end(past: timedelta) -> tuple[World, datetime, datetime]:
    """The evader's new account on the old one's blacklist through the link; its clock
    `past` that blacklisting's end, its link reports a day short of it: nothing fired."""
    w = World()
    evader(w)
    state = w.state("new").unpaid
    end = state.listings["shop-1"].until
    state, effects = unpaid.advance(state, "new", end + past, w.policies, linked_upto=end - DAY)
    assert effects == []
    return w, end, end + past


def test_a_blacklisting_through_a_link_ends_once_the_link_reports_are_that_far() -> None:
    # The customer's clock runs ahead of its link reports: a report of an earlier time
    # may still take the link back, and the blacklisting through it ends then, not at
    # its own end because the clock got there first.
    w, end, clock = clock_past_a_linked_end(5 * DAY)
    held = w.state("new").unpaid
    assert held.listings["shop-1"].linked_to == "old"
    assert unpaid.next_timer(held, w.policies, linked_upto=end - DAY) is None
    # The report comes: the link was taken back ten days before the end.
    unpaid.end_linked(held, "old", None, end - 10 * DAY)
    held, effects = unpaid.advance(held, "new", clock, w.policies, linked_upto=clock)
    (ended,) = effects
    assert isinstance(ended, Unblacklist) and ended.at == end - 10 * DAY


def test_an_own_blacklisting_after_one_through_a_link_that_waited_ends_that_one() -> None:
    # The end of a blacklisting through a link waited for the link reports when the
    # customer earned one of its own: the first ended before the second began.
    w, end, later = clock_past_a_linked_end(3 * DAY)
    state = w.state("new").unpaid
    effects = unpaid.enlist(state, "new", "shop-1", later, [], [], w.policies.default)
    assert [type(e) for e in effects] == [Unblacklist, Blacklist]
    assert effects[0].at == end and effects[0].linked_to == "old"
    assert state.waiting == {} and state.listings["shop-1"].linked_to is None


def test_a_listing_through_a_link_travels_no_further() -> None:
    # new is linked to old (phone) and, through a shared card, to third: third is
    # linked to no blacklisted account of its own, so it stays off the list.
    w = World()
    evader(w)
    w.event("new", T0 + 11 * DAY, payment_instrument=h("card"))
    w.event("third", T0 + 12 * DAY, payment_instrument=h("card"))
    assert "third" in w.state("new").links().links
    assert w.listings("third") == {}
    assert w.of(Blacklist, "third") == []


def test_own_strikes_replace_a_listing_through_a_link_and_outlast_it() -> None:
    w = World()
    evader(w)
    w.admin("new", "blacklist", T0 + 12 * DAY)  # an operator's own decision on new
    listing = w.state("new").unpaid.listings["shop-1"]
    assert (listing.linked_to, listing.manual) == (None, True)
    w.admin("old", "unblacklist", T0 + 13 * DAY)
    w.event("new", T0 + 14 * DAY, phone=h("+62811"))
    assert w.of(Unblacklist, "new") == []
    assert w.listings("new")["shop-1"][2] is None


def alerts_of(w: World, customer: str) -> list[dict[str, object]]:
    bodies = [to_alert(e) for e in w.effects if e.customer_id == customer]
    return sorted((a.body for a in bodies if a is not None), key=lambda b: str(b["alert_id"]))


def own_then_linked(w: World, late: datetime | None) -> None:
    """`new` is on the shop's blacklist by its own from day 0 to day 30 when it is linked
    (day 10) to `old`, blacklisted from day 5 to day 95; the reports of the link reach
    `new` in time, or only once its clock is at `late`."""
    w.event("old", T0, phone=h("+62811"))
    w.admin("old", "blacklist", T0 + 5 * DAY)
    w.admin("new", "blacklist", T0, days=30)
    if late is not None:
        w.hold()
    w.event("new", T0 + 10 * DAY, phone=h("+62811"))
    if late is not None:
        w.advance("new", late)
        w.deliver()
    w.advance("new", T0 + 200 * DAY)


def test_a_linked_blacklisting_waits_for_the_customers_own_and_resumes_after_it() -> None:
    w = World()
    own_then_linked(w, None)
    listed = [(e.since, e.until, e.linked_to) for e in w.of(Blacklist, "new")]
    assert listed == [(T0, T0 + 30 * DAY, None), (T0 + 30 * DAY, T0 + 95 * DAY, "old")]
    ended = [(e.at, e.linked_to) for e in w.of(Unblacklist, "new")]
    assert ended == [(T0 + 30 * DAY, None), (T0 + 95 * DAY, "old")]


def test_a_linked_blacklisting_heard_of_late_gives_the_alerts_it_gives_in_time() -> None:
    w = World()
    own_then_linked(w, None)
    expected = alerts_of(w, "new")
    # Heard of while its own blacklisting lasts, and after it ended (day 30), and
    # after the linked account's ended too (day 95).
    for late in (T0 + 20 * DAY, T0 + 40 * DAY, T0 + 100 * DAY):
        again = World()
        own_then_linked(again, late)
        assert alerts_of(again, "new") == expected, late


def linked_then_own(w: World, late: datetime | None, lifted: bool = False) -> None:
    """`new` is linked (day 10) to `old`, blacklisted from day 1 to day 91, then is put
    on the shop's blacklist by its own from day 20 to day 50 (lifted by an operator on
    day 40 when `lifted`); the reports of the link reach it in time or at `late`."""
    w.event("old", T0, phone=h("+62811"))
    w.admin("old", "blacklist", T0 + DAY)
    if late is not None:
        w.hold()
    w.event("new", T0 + 10 * DAY, phone=h("+62811"))
    w.admin("new", "blacklist", T0 + 20 * DAY, days=30)
    if lifted:
        w.admin("new", "unblacklist", T0 + 40 * DAY)
    if late is not None:
        w.advance("new", late)
        w.deliver()
    w.advance("new", T0 + 200 * DAY)


def test_a_blacklisting_of_its_own_sets_the_linked_one_aside_until_it_ends() -> None:
    w = World()
    linked_then_own(w, None)
    listed = [(e.since, e.linked_to) for e in w.of(Blacklist, "new")]
    assert listed == [(T0 + 10 * DAY, "old"), (T0 + 20 * DAY, None), (T0 + 50 * DAY, "old")]
    ended = [(e.at, e.linked_to) for e in w.of(Unblacklist, "new")]
    assert ended == [(T0 + 50 * DAY, None), (T0 + 91 * DAY, "old")]
    # While it waits, the customer's trail says so.
    during = World()
    during.event("old", T0, phone=h("+62811"))
    during.admin("old", "blacklist", T0 + DAY)
    during.event("new", T0 + 10 * DAY, phone=h("+62811"))
    during.admin("new", "blacklist", T0 + 20 * DAY, days=30)
    state = during.state("new")
    trail = explain("new", state.unpaid, during.policies, state.links(), LINKS)
    (own,) = [d for d in trail["decisions"] if d["decision"] == "blacklisted"]
    assert own["manual"] and own["until"] == (T0 + 50 * DAY).isoformat()
    assert f"then through linked account old until {(T0 + 91 * DAY).isoformat()}" in own["text"]
    # What waits, and the customer's last own listing once it ended, are stored with it.
    assert state.unpaid.waiting and decode_state(encode_state(state)) == state
    during.advance("new", T0 + 60 * DAY)
    assert state.unpaid.ended["shop-1"].end == T0 + 50 * DAY and not state.unpaid.waiting
    assert decode_state(encode_state(state)) == state
    # And it is forgotten as the offence record is.
    memory = during.policies.default.repeat_offender_memory
    during.advance("new", T0 + 95 * DAY)  # the listing through the link has ended too
    assert unpaid.next_cleanup(state.unpaid, during.policies) == T0 + 50 * DAY + memory
    during.advance("new", T0 + 50 * DAY + memory)
    assert state.unpaid.ended == {} and state.unpaid.offences == {}
    # Lifted by an operator, it takes the one through the link with it.
    lifted = World()
    linked_then_own(lifted, None, lifted=True)
    assert [(e.at, e.cause) for e in lifted.of(Unblacklist, "new")] == [(T0 + 40 * DAY, "manual")]
    assert lifted.listings("new") == {} and lifted.state("new").unpaid.waiting == {}
    for late in (T0 + 15 * DAY, T0 + 30 * DAY, T0 + 45 * DAY, T0 + 60 * DAY, T0 + 100 * DAY):
        for lift in (False, True):
            expected, again = World(), World()
            linked_then_own(expected, None, lift)
            linked_then_own(again, late, lift)
            assert alerts_of(again, "new") == alerts_of(expected, "new"), (late, lift)


def test_an_operator_lifting_it_is_final_and_why_says_where_it_came_from() -> None:
    w = World()
    evader(w)
    state = w.state("new")
    trail = explain("new", state.unpaid, w.policies, state.links(), LINKS)
    (listed,) = [d for d in trail["decisions"] if d["decision"] == "blacklisted"]
    assert listed["linked_to"] == "old"
    assert "through linked account old" in listed["text"]
    assert trail["policies"]["shop-1"]["linked_accounts"] == "blacklist"
    w.admin("new", "unblacklist", T0 + 11 * DAY)
    # More reports of the same link (new events) do not put it back.
    w.event("new", T0 + 12 * DAY, phone=h("+62811"))
    w.event("old", T0 + 13 * DAY, phone=h("+62811"))
    assert w.listings("new") == {}
    assert len(w.of(Blacklist, "new")) == 1
    assert w.state("new").unpaid.offences == {}


def two_accounts_of_one_buyer(w: World) -> None:
    """`old` leaves two unpaid orders (strikes on days 2 and 3), then `new`, linked by a
    phone, leaves one (a strike on day 21)."""
    w.event("old", T0, phone=h("+62811"))
    w.unpaid_order("old", "o-1", T0 + DAY)
    w.unpaid_order("old", "o-2", T0 + 2 * DAY)
    w.event("new", T0 + 10 * DAY, phone=h("+62811"))
    w.unpaid_order("new", "n-1", T0 + 20 * DAY)
    w.advance("new", T0 + 21 * DAY + timedelta(hours=1))
    w.advance("old", T0 + 21 * DAY + timedelta(hours=1))


def test_shared_strikes_blacklist_both_accounts_at_the_third() -> None:
    w = World(linked_accounts="flag", linked_strikes="shared")
    two_accounts_of_one_buyer(w)
    third = T0 + 21 * DAY
    for account, others in (("new", "o-1 o-2"), ("old", "n-1")):
        (listed,) = w.of(Blacklist, account)
        assert listed.since == third, account
        assert sorted(line.order_id for line in listed.evidence) == sorted(["o-1", "o-2", "n-1"])
        assert all(
            "linked account" in line.reason
            for line in listed.evidence
            if line.order_id in others.split()
        )
        assert "linked_strikes: shared" in listed.reason
        alert = to_alert(listed)
        assert alert is not None
        compiled_validator("customer_blacklisted.v2")(alert.body)
        assert alert.body["linked_customer_ids"] == [
            others and ("old" if account == "new" else "new")
        ]
    # Each account's own blacklisting: passed on like any it earned.
    assert w.state("new").unpaid.listings["shop-1"].linked_to is None
    state = w.state("new")
    trail = explain("new", state.unpaid, w.policies, state.links(), LINKS)
    (decided,) = [d for d in trail["decisions"] if d["decision"] == "blacklisted"]
    assert decided["evidence"] == ["n-1"]
    assert decided["linked_evidence"] == [
        {"customer_id": "old", "order_id": "o-1"},
        {"customer_id": "old", "order_id": "o-2"},
    ]
    assert "o-1 of old, o-2 of old" in decided["text"]
    assert trail["policies"]["shop-1"]["linked_strikes"] == "shared"


def test_with_separate_strikes_neither_account_reaches_the_threshold() -> None:
    w = World(linked_accounts="flag", linked_strikes="separate")
    two_accounts_of_one_buyer(w)
    assert w.of(Blacklist, "new") == [] and w.of(Blacklist, "old") == []


def test_a_linked_strike_reversed_undoes_the_blacklisting_that_counted_it() -> None:
    w = World(linked_accounts="flag", linked_strikes="shared")
    two_accounts_of_one_buyer(w)
    # The new account pays n-1 late, inside the grace period: its strike goes, and
    # both blacklistings rested on it.
    paid = T0 + 21 * DAY + timedelta(hours=20)
    w.pay("new", "n-1", paid)
    w.advance("old", T0 + 23 * DAY)
    assert [e.cause for e in w.of(Unblacklist, "old")] == ["strike_reversed"]
    assert [e.cause for e in w.of(Unblacklist, "new")] == ["strike_reversed"]
    assert w.listings("new") == {} and w.listings("old") == {}
    (lifted,) = w.of(Unblacklist, "old")
    # When the new account's announcement told of the payment, not when the pair began
    # (day 10): a blacklisting is never lifted before its cause.
    assert lifted.at == paid == w.of(Unblacklist, "new")[0].at
    alert = to_alert(lifted)
    assert alert is not None
    compiled_validator("customer_unblacklisted.v2")(alert.body)
    # The strikes it counted, the linked account's marked, and what is left standing.
    assert alert.body["linked_customer_ids"] == ["new"]
    assert alert.body["blacklisting"]["linked_order_ids"] == ["n-1"]
    assert alert.body["strikes_standing"]["count"] < alert.body["strikes_standing"]["threshold"]
    # The strikes that stand (the old account's two) blacklist no one.
    w.event("new", T0 + 24 * DAY, phone=h("+62811"))
    w.event("old", T0 + 24 * DAY, phone=h("+62811"))
    assert len(w.of(Blacklist, "new")) == 1 and len(w.of(Blacklist, "old")) == 1


def test_counted_strikes_do_not_blacklist_again_when_the_first_blacklisting_ends() -> None:
    w = World(linked_accounts="flag", linked_strikes="shared")
    two_accounts_of_one_buyer(w)
    after = T0 + 21 * DAY + timedelta(days=91)  # the blacklisting (90 days) has ended
    w.event("new", after, phone=h("+62811"))
    w.event("old", after, phone=h("+62811"))
    assert [e.cause for e in w.of(Unblacklist, "new")] == ["expired"]
    assert len(w.of(Blacklist, "new")) == 1 and len(w.of(Blacklist, "old")) == 1


def test_erasing_the_linked_account_ends_the_blacklisting_through_it() -> None:
    w = World()
    evader(w)
    erased_at = T0 + 15 * DAY
    old = w.state("old")
    assert old.identity is not None
    for seen in identity.forget(old.identity, "old", erased_at):
        ident = w.identifiers.setdefault(seen.key, IdentifierState())
        for report in identity.sight(ident, seen, LINKS):
            w.receive(report)
    w.customers["old"] = CustomerState()
    w.advance("new", erased_at + timedelta(minutes=1))
    (ended,) = w.of(Unblacklist, "new")
    assert (ended.at, ended.linked_to) == (erased_at, "old")
    assert w.listings("new") == {}
    assert "old" not in w.state("new").links().links
