"""A blacklisting that follows a strong link (policy `linked_accounts: blacklist`), without Kafka.

Each customer here has a whole state (its blacklist and its links); sightings and
reports go through the two stages in memory, as tests/unit/test_identity.py does.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from hitrun.agents import identity, unpaid
from hitrun.agents.alerts import to_alert
from hitrun.agents.effects import Blacklist, Effect, Unblacklist
from hitrun.agents.identity import IdentifierState, LinkEffect, LinkPolicy, Report
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.state import CustomerState
from hitrun.agents.why import explain
from hitrun.schemas import compiled_validator
from hitrun.schemas.records import AdminActionRequested

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
LINKS = LinkPolicy()


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class World:
    """Customers with whole states; `extends` says which blacklists follow links."""

    def __init__(self, linked_accounts: str = "blacklist") -> None:
        self.policies = Policies(UnpaidPolicy(linked_accounts=linked_accounts))
        self.identifiers: dict[bytes, IdentifierState] = {}
        self.customers: dict[str, CustomerState] = {}
        self.effects: list[Effect] = []
        self.links: list[LinkEffect] = []

    def state(self, customer: str) -> CustomerState:
        return self.customers.setdefault(customer, CustomerState())

    def extends(self, scope: str) -> bool:
        return self.policies.for_shop(scope).linked_accounts == "blacklist"

    def event(self, customer: str, at: datetime, **ids: str) -> None:
        self.advance(customer, at)
        self.announce(customer, ids, at)

    def announce(self, customer: str, ids: dict[str, str] | None, at: datetime) -> None:
        state = self.state(customer)
        listed = unpaid.own_listings(state.unpaid)
        again = ids is None
        for seen in identity.announce(state.links(), customer, ids, at, listed, LINKS, again):
            ident = self.identifiers.setdefault(seen.key, IdentifierState())
            for report in identity.sight(ident, seen, LINKS):
                self.receive(report)

    def receive(self, report: Report) -> None:
        state = self.state(report.customer)
        effects = identity.receive(state.links(), report.customer, report, LINKS)
        self.links += effects
        self.changed(
            report.customer,
            identity.carry_listings(
                state.unpaid, state.links(), report.customer, effects, self.extends
            ),
        )

    def admin(self, customer: str, action: str, at: datetime) -> None:
        self.advance(customer, at)
        event = AdminActionRequested(
            event_id=f"admin-{customer}-{action}-{at.isoformat()}",
            occurred_at=at,
            customer_id=customer,
            shop_id="shop-1",
            action=action,
            actor="ops@shop-1",
            reason="test",
        )
        state = self.state(customer)
        state.unpaid, effects = unpaid.handle(state.unpaid, event, self.policies)
        self.changed(customer, effects)

    def advance(self, customer: str, now: datetime) -> None:
        state = self.state(customer)
        unlinked = identity.age(state.links(), customer, now, LINKS)
        self.links += unlinked
        identity.carry_listings(state.unpaid, state.links(), customer, unlinked, self.extends)
        state.unpaid, effects = unpaid.advance(state.unpaid, customer, now, self.policies)
        self.changed(customer, effects)

    def changed(self, customer: str, effects: list[Effect]) -> None:
        self.effects += effects
        # As the agent does: a change of the customer's own listings is announced again.
        own = [
            e.since if isinstance(e, Blacklist) else e.at
            for e in effects
            if isinstance(e, Blacklist | Unblacklist) and e.linked_to is None
        ]
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
    compiled_validator("customer_blacklisted.v1")(alert.body)
    assert alert.body["evidence"] == [] and alert.body["actor"] == "hitrun"
    assert "linked to account old" in alert.body["reason"]
    # It ends with the old account's blacklisting, as no offence of the new one's.
    w.advance("new", end + DAY)
    (ended,) = w.of(Unblacklist, "new")
    assert (ended.at, ended.cause, ended.linked_to) == (end, "expired", "old")
    unblacklisted = to_alert(ended)
    assert unblacklisted is not None
    compiled_validator("customer_unblacklisted.v1")(unblacklisted.body)
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
