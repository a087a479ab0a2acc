"""Linked accounts without Kafka: the identity stage and the customer stage (agents/identity.py)."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from hitrun.agents import identity
from hitrun.agents.alerts import link_alert
from hitrun.agents.identity import (
    AccountLinked,
    AccountUnlinked,
    Dropped,
    Forgotten,
    IdentifierState,
    IdentityState,
    LinkedAccountFlagged,
    LinkEffect,
    LinkPolicy,
    Report,
    Shared,
    Sighting,
)
from hitrun.agents.linking import LinkRules
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.state import CustomerState
from hitrun.schemas import compiled_validator

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
POLICY = LinkPolicy()


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class World:
    """Both stages in memory: sightings go to the identifiers, reports to the customers."""

    def __init__(self, policy: LinkPolicy = POLICY) -> None:
        self.policy = policy
        self.identifiers: dict[bytes, IdentifierState] = {}
        self.customers: dict[str, IdentityState] = {}
        self.listed: dict[str, list[tuple[str, datetime, datetime]]] = {}
        self.effects: list[LinkEffect] = []

    def state(self, customer: str) -> IdentityState:
        return self.customers.setdefault(customer, IdentityState())

    def event(self, customer: str, at: datetime, **ids: str) -> None:
        sightings = identity.announce(
            self.state(customer), customer, ids, at, self.listed.get(customer, []), self.policy
        )
        self.deliver(sightings)

    def blacklist(self, customer: str, at: datetime, scope: str = "shop-1") -> None:
        self.listed.setdefault(customer, []).append((scope, at, at + timedelta(days=90)))
        self.tell(customer, at)

    def unblacklist(self, customer: str, at: datetime) -> None:
        self.listed[customer] = []
        self.tell(customer, at)

    def tell(self, customer: str, at: datetime) -> None:
        listed = self.listed[customer]
        again = identity.announce(
            self.state(customer), customer, None, at, listed, self.policy, again=True
        )
        self.deliver(again)

    def deliver(self, sightings: list[Sighting]) -> None:
        for seen in sightings:
            # Through the wire format, as the topics carry it.
            seen = msgspec.json.decode(msgspec.json.encode(seen), type=Sighting)
            state = self.identifiers.setdefault(seen.key, IdentifierState())
            for report in identity.sight(state, seen, self.policy):
                report = msgspec.json.decode(msgspec.json.encode(report), type=Report)
                self.effects += identity.receive(
                    self.state(report.customer), report.customer, report, self.policy
                )

    def of(self, kind: type, customer: str | None = None) -> list[LinkEffect]:
        return [
            e
            for e in self.effects
            if isinstance(e, kind) and (customer is None or e.customer_id == customer)
        ]


def test_an_evader_with_a_reused_phone_is_linked_and_flagged() -> None:
    w = World()
    w.event("old", T0, phone=h("+62811"), email=h("a@x"))
    w.blacklist("old", T0 + timedelta(days=3))
    w.event("new", T0 + timedelta(days=40), phone=h("+62811"), email=h("fresh@x"))
    flagged = w.of(LinkedAccountFlagged, "new")
    assert [(e.other, e.listings) for e in flagged] == [
        ("old", (("shop-1", T0 + timedelta(days=3), T0 + timedelta(days=93)),))
    ]
    assert [k for k, _ in flagged[0].evidence] == [f"phone:{h('+62811')[:12]}"]
    # Both sides know the link; only the one linked to a listed account is flagged.
    assert [e.other for e in w.of(AccountLinked)] == ["old", "new"]
    assert w.of(LinkedAccountFlagged, "old") == []


def test_a_link_made_before_the_blacklisting_flags_when_it_comes() -> None:
    w = World()
    w.event("a", T0, payment_instrument=h("card"))
    w.event("b", T0 + timedelta(hours=1), payment_instrument=h("card"))
    assert w.of(LinkedAccountFlagged) == []
    w.blacklist("a", T0 + timedelta(days=2))
    assert [(e.customer_id, e.other) for e in w.of(LinkedAccountFlagged)] == [("b", "a")]
    # Told again (a refresh, a redelivery): no second flag for the same blacklisting.
    w.deliver(
        identity.announce(
            w.customers["a"], "a", None, T0 + timedelta(days=3), w.listed["a"], POLICY, again=True
        )
    )
    assert len(w.of(LinkedAccountFlagged)) == 1
    w.blacklist("a", T0 + timedelta(days=4), scope="shop-2")
    assert [[s for s, _, _ in e.listings] for e in w.of(LinkedAccountFlagged)] == [
        ["shop-1"],
        ["shop-2"],
    ]


def test_a_customer_heard_of_late_is_judged_by_the_blacklistings_of_their_time() -> None:
    # The old account's partition ran ahead: its blacklisting and its end were both
    # announced before the identity stage heard of the new account, which came in
    # (event time) while the blacklisting lasted. Flagged all the same, at that time.
    w = World()
    w.event("old", T0, phone=h("p"))
    w.blacklist("old", T0 + timedelta(days=3))
    w.unblacklist("old", T0 + timedelta(days=30))
    w.event("new", T0 + timedelta(days=20), phone=h("p"))
    w.event("later", T0 + timedelta(days=40), phone=h("p"))
    flagged = w.of(LinkedAccountFlagged)
    assert [(e.customer_id, e.at) for e in flagged] == [("new", T0 + timedelta(days=20))]
    (listing,) = flagged[0].listings
    assert listing == ("shop-1", T0 + timedelta(days=3), T0 + timedelta(days=30))


def test_an_address_or_a_device_alone_links_nothing_but_both_together_do() -> None:
    # A household shares an address, an office a device: neither alone is a person.
    w = World()
    w.event("a", T0, shipping_address=h("flat 1"))
    w.event("b", T0, shipping_address=h("flat 1"))
    w.event("c", T0, device=h("tablet"))
    w.event("d", T0, device=h("tablet"))
    assert w.of(AccountLinked) == []
    w.event("a", T0 + POLICY.refresh, shipping_address=h("flat 1"), device=h("tablet"))
    w.event("b", T0 + POLICY.refresh, shipping_address=h("flat 1"), device=h("tablet"))
    assert {(e.customer_id, e.other) for e in w.of(AccountLinked)} == {("a", "b"), ("b", "a")}
    # A shop that counts a device alone says so.
    w2 = World(LinkPolicy(strong_kinds=frozenset({"phone", "device"})))
    w2.event("c", T0, device=h("tablet"))
    w2.event("d", T0, device=h("tablet"))
    assert {e.customer_id for e in w2.of(AccountLinked)} == {"c", "d"}


def test_strangers_sharing_a_common_identifier_are_not_linked() -> None:
    # A pickup point's phone on more than K customers: common, it links nobody.
    w = World()
    k = POLICY.common_after
    for n in range(k + 3):
        w.event(f"c{n}", T0 + timedelta(minutes=n), phone=h("pickup point"))
    state = w.identifiers[f"phone:{h('pickup point')}".encode()]
    assert state.customers == {} and state.common_until is not None
    # The first K were linked while it looked rare; each link was taken back.
    linked = {(e.customer_id, e.other) for e in w.of(AccountLinked)}
    unlinked = {(e.customer_id, e.other) for e in w.of(AccountUnlinked)}
    assert linked == unlinked
    assert {e.cause for e in w.of(AccountUnlinked)} == {"identifier_common"}
    assert all(not s.links for s in w.customers.values())


def test_a_strong_link_stays_when_a_common_identifier_is_dropped() -> None:
    w = World()
    w.event("a", T0, phone=h("office switchboard"), email=h("a@x"))
    w.event("b", T0, phone=h("office switchboard"), email=h("a@x"))
    for n in range(POLICY.common_after):
        w.event(f"other{n}", T0, phone=h("office switchboard"))
    # Linked through the switchboard while it looked rare, the others are unlinked; b stays.
    unlinked = [e.other for e in w.of(AccountUnlinked, "a")]
    assert "b" not in unlinked and unlinked
    assert set(w.customers["a"].links) == {"b"}
    assert list(w.customers["a"].links["b"].evidence) == [f"email:{h('a@x')[:12]}"]


def test_evidence_ages_out_and_the_link_is_taken_back() -> None:
    w = World()
    w.event("a", T0, phone=h("p"))
    w.event("b", T0 + timedelta(days=1), phone=h("p"))
    link = w.customers["a"].links["b"]
    expiry = identity.next_expiry(w.customers["a"], POLICY)
    assert expiry == min(link.evidence.values()) + POLICY.window
    assert identity.age(w.customers["a"], "a", expiry - timedelta(seconds=1), POLICY) == []
    unlinked = identity.age(w.customers["a"], "a", expiry + timedelta(seconds=1), POLICY)
    assert [(e.other, e.cause) for e in unlinked] == [("b", "evidence_aged_out")]
    assert w.customers["a"].links == {}


def test_links_age_out_at_the_time_their_evidence_does_however_late_they_are_aged() -> None:
    # The unlink is at the evidence's expiry, not at the time the aging ran: a customer's
    # clock may be far ahead of its link reports, and the alert must not depend on it.
    w = World()
    w.event("a", T0, phone=h("p"))
    w.event("b", T0 + timedelta(days=1), phone=h("p"), email=h("b@x"))
    w.event("a", T0 + timedelta(days=30), email=h("b@x"))
    state = CustomerState(identity=w.customers["a"])
    rules = LinkRules(Policies(UnpaidPolicy()), POLICY)
    # The phone ages out first; the email (seen by both a day later) keeps the link.
    first = T0 + POLICY.window
    unlinked, _ = rules.expire("a", state, first + timedelta(days=100))
    assert [(e.other, e.at, e.cause) for e in unlinked] == [
        ("b", T0 + timedelta(days=1) + POLICY.window, "evidence_aged_out")
    ]
    assert state.identity is not None and state.identity.aged == first + timedelta(days=100)
    # Aged no further than asked: nothing left to age, the same.
    assert rules.expire("a", state, first + timedelta(days=200)) == ([], [])


def test_a_report_heard_after_its_evidence_aged_out_links_nothing() -> None:
    # A report of an earlier time, heard after the customer's links aged past it, brings
    # no evidence that had aged out by then: in time, its link would have aged out too.
    w = World()
    w.event("a", T0, phone=h("p"))
    w.event("b", T0 + timedelta(days=1), phone=h("p"))
    report = Shared("a", "b", "phone", h("p")[:12], T0, T0 + timedelta(days=1), ())
    late = IdentityState(aged=T0 + POLICY.window)
    assert identity.receive(late, "a", report, POLICY) == []
    assert late.links == {}
    # Heard while its evidence still counts, it links.
    early = IdentityState(aged=T0 + POLICY.window - timedelta(seconds=1))
    linked = identity.receive(early, "a", report, POLICY)
    assert [type(e) for e in linked] == [AccountLinked]


def test_a_report_heard_after_its_link_aged_out_decides_as_it_would_have_in_time() -> None:
    # The other account announced again (a blacklisting of its own began) at a time the
    # link stood; heard only after the link aged out, it flags as it would have then,
    # once, and makes no link again.
    w = World()
    w.event("a", T0, phone=h("p"))
    w.event("b", T0 + timedelta(days=1), phone=h("p"))
    state = w.customers["a"]
    rules = LinkRules(Policies(UnpaidPolicy()), POLICY)
    end = T0 + POLICY.window
    (unlinked,), _ = rules.expire("a", CustomerState(identity=state), end + timedelta(days=9))
    assert isinstance(unlinked, AccountUnlinked) and unlinked.at == end
    listed = (("shop-1", T0 + timedelta(days=30), T0 + timedelta(days=120)),)
    told = T0 + timedelta(days=30)
    report = Shared("a", "b", "phone", h("p")[:12], T0, T0 + timedelta(days=1), listed, (), told)
    (flag,) = identity.receive(state, "a", report, POLICY)
    assert isinstance(flag, LinkedAccountFlagged) and flag.at == told
    assert flag.listings == listed and "b" not in state.links
    assert identity.receive(state, "a", report, POLICY) == []  # flagged once


def test_a_report_heard_after_its_identifier_turned_common_links_nothing_again() -> None:
    # The phone turned common and took the link back; a report of a time the link
    # stood, about that phone and heard only then, flags as it would have in time and
    # does not make the link again through an identifier that links nothing now.
    w = World()
    w.event("a", T0, phone=h("p"))
    w.event("b", T0 + timedelta(days=1), phone=h("p"))
    state = w.customers["a"]
    common = T0 + timedelta(days=40)
    (taken,) = identity.receive(state, "a", Dropped("a", "phone", h("p")[:12], common), POLICY)
    assert isinstance(taken, AccountUnlinked) and taken.cause == "identifier_common"
    listed = (("shop-1", T0 + timedelta(days=30), T0 + timedelta(days=120)),)
    told = T0 + timedelta(days=30)
    report = Shared("a", "b", "phone", h("p")[:12], T0, T0 + timedelta(days=1), listed, (), told)
    (flag,) = identity.receive(state, "a", report, POLICY)
    assert isinstance(flag, LinkedAccountFlagged) and flag.at == told
    assert "b" not in state.links


def test_an_old_sighting_does_not_link_a_new_customer() -> None:
    w = World()
    w.event("a", T0, phone=h("p"))
    w.event("b", T0 + POLICY.window + timedelta(days=1), phone=h("p"))
    assert w.of(AccountLinked) == []


def test_an_erased_customer_is_forgotten_by_identifiers_and_links() -> None:
    w = World()
    w.event("a", T0, phone=h("p"))
    w.event("b", T0, phone=h("p"))
    w.deliver(identity.forget(w.customers["a"], "a", T0 + timedelta(days=1)))
    assert "a" not in w.identifiers[f"phone:{h('p')}".encode()].customers
    assert "a" not in w.customers["b"].links
    assert [(e.customer_id, e.cause) for e in w.of(AccountUnlinked)] == [("b", "erased")]


def test_state_stays_bounded_per_identifier_and_per_customer() -> None:
    policy = LinkPolicy()
    w = World(policy)
    rng = random.Random(7)
    phones = [h(f"phone {n}") for n in range(40)]
    for n in range(3000):
        customer = f"c{rng.randrange(300)}"
        w.event(
            customer,
            T0 + timedelta(minutes=n),
            phone=rng.choice(phones),
            device=h(f"device {rng.randrange(500)}"),
            email=h(f"{customer}@x"),
        )
    assert max(len(s.customers) for s in w.identifiers.values()) <= policy.common_after
    assert max(len(s.announced) for s in w.customers.values()) <= policy.max_identifiers
    assert max(len(s.links) for s in w.customers.values()) <= policy.max_links
    # Bounded evidence per link too: at most one entry per identifier announced.
    assert all(
        len(link.evidence) <= policy.max_identifiers
        for s in w.customers.values()
        for link in s.links.values()
    )


def test_a_customer_announces_an_identifier_once_until_it_needs_refreshing() -> None:
    state = IdentityState()
    first = identity.announce(state, "a", {"phone": h("p")}, T0, [], POLICY)
    again = identity.announce(state, "a", {"phone": h("p")}, T0 + timedelta(days=1), [], POLICY)
    later = identity.announce(state, "a", {"phone": h("p")}, T0 + POLICY.refresh, [], POLICY)
    assert (len(first), len(again), len(later)) == (1, 0, 1)


@pytest.mark.parametrize("seed", range(5))
def test_the_links_do_not_depend_on_the_order_customers_arrive_in(seed: int) -> None:
    events = [
        ("a", T0, {"phone": h("p1")}),
        ("b", T0 + timedelta(hours=1), {"phone": h("p1"), "email": h("e")}),
        ("c", T0 + timedelta(hours=2), {"email": h("e")}),
        ("d", T0 + timedelta(hours=3), {"shipping_address": h("addr")}),
        ("e", T0 + timedelta(hours=4), {"shipping_address": h("addr")}),
    ]

    def outcome(order: list[int]) -> tuple[dict[str, set[str]], list[str]]:
        w = World()
        for i in order:
            customer, at, ids = events[i]
            w.event(customer, at, **ids)
        w.blacklist("a", T0 + timedelta(days=1))
        links = {
            c: {o for o, link in s.links.items() if link.strong_since}
            for c, s in w.customers.items()
        }
        ids = sorted(link_alert(e, POLICY).body["alert_id"] for e in w.effects)
        return links, ids

    order = list(range(len(events)))
    random.Random(seed).shuffle(order)
    # The same links, and alerts with the same ids (consumers drop duplicates by them).
    assert outcome(order) == outcome(list(range(len(events))))


def test_link_alerts_match_their_schemas() -> None:
    w = World()
    w.event("a", T0, phone=h("p"))
    w.blacklist("a", T0 + timedelta(days=1))
    w.event("b", T0 + timedelta(days=2), phone=h("p"))
    w.effects += identity.age(w.customers["b"], "b", T0 + timedelta(days=800), POLICY)
    kinds = set()
    for effect in w.effects:
        alert = link_alert(effect, POLICY)
        compiled_validator(f"{alert.type}.v1")(alert.body)
        kinds.add(alert.type)
    assert kinds == {"account_linked", "linked_account_flagged", "account_unlinked"}


def test_reports_are_tagged_records_on_the_wire() -> None:
    shared = Shared("a", "b", "phone", "0" * 12, T0, T0, ())
    for report in (shared, Dropped("a", "phone", "0" * 12, T0), Forgotten("a", "b", T0)):
        assert msgspec.json.decode(msgspec.json.encode(report), type=Report) == report
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            b'{"customer":"a","kind":"phone","hash":"not-hex","at":"2026-01-01T00:00:00Z"}',
            type=Sighting,
        )


def test_the_wire_form_without_strikes_is_what_workers_of_the_previous_version_read() -> None:
    # During a rolling upgrade both versions read each other's records; the previous
    # one refuses unknown fields, and knows no strikes.
    seen = Sighting("c-1", "phone", h("+62811"), T0, (("shop-1", T0, T0 + timedelta(days=90)),))
    shared = Shared("c-1", "c-2", "phone", h("+62811")[:12], T0, T0, ())
    assert set(msgspec.json.decode(msgspec.json.encode(seen))) == {
        "customer",
        "kind",
        "hash",
        "at",
        "listed",
    }
    assert set(msgspec.json.decode(msgspec.json.encode(shared))) == {
        "type",
        "customer",
        "other",
        "kind",
        "prefix",
        "evidence_at",
        "at",
        "other_listed",
    }
    # And the previous version's records, every field written, are read.
    old = (
        b'{"customer":"c-1","kind":"phone","hash":"%s","at":"2026-03-01T12:00:00Z",'
        % (h("+62811").encode())
        + b'"listed":[],"forget":false}'
    )
    assert msgspec.json.decode(old, type=Sighting).strikes == ()


def test_a_report_of_an_announcement_made_again_goes_by_when_that_was_made() -> None:
    # A pair's report carries when the pair began (`at`); one told by a later
    # announcement (a blacklisting ended, and the customer announced again) also carries
    # when that was, which is where the customer stage places it among the others.
    phone = h("+62 811 0000 4444")
    ident = IdentifierState()
    one, two, later = T0, T0 + timedelta(hours=1), T0 + timedelta(days=30)
    for who, at in (("ha", one), ("hb", two)):
        for seen in identity.announce(IdentityState(), who, {"phone": phone}, at, [], POLICY):
            reports = identity.sight(ident, seen, POLICY)
    assert [(r.at, r.sighted, identity.heard_at(r)) for r in reports] == [(two, None, two)] * 2
    # Without it on the wire: a worker of an earlier revision reads such a report too.
    assert b"sighted" not in msgspec.json.encode(reports[0])
    again = Sighting("ha", "phone", phone, later)
    reports = identity.sight(ident, again, POLICY)
    assert {type(r) for r in reports} == {Shared}
    assert [(r.at, identity.heard_at(r)) for r in reports] == [(two, later)] * 2
    # On the wire only where it differs; a report of an earlier revision has none.
    wire = msgspec.json.decode(msgspec.json.encode(reports[0]), type=dict)
    assert wire["sighted"] == later.isoformat().replace("+00:00", "Z")
    del wire["sighted"]
    old = msgspec.json.decode(msgspec.json.encode(wire), type=Report)
    assert identity.heard_at(old) == old.at == two


def test_an_announcement_made_again_is_not_a_use_and_keeps_no_link_alive() -> None:
    # A blacklisting that begins or ends is announced again, with every identifier the
    # customer has, to tell the identity stage; the customer used none of them then. A
    # link's evidence is when both last used the identifier, and it ages out from there.
    phone = h("+62 811 0000 5555")
    w = World()
    w.event("a", T0, phone=phone)
    w.blacklist("a", T0 + timedelta(days=2))
    w.unblacklist("a", T0 + timedelta(days=92))
    again = identity.announce(w.state("a"), "a", None, T0 + timedelta(days=92), [], POLICY, True)
    assert [(seen.at, seen.used, identity.last_use(seen)) for seen in again] == [
        (T0 + timedelta(days=92), T0, T0)
    ]
    w.event("b", T0 + timedelta(days=100), phone=phone)
    (linked,) = w.of(AccountLinked, "b")
    assert linked.evidence == ((f"phone:{phone[:12]}", T0),)
    assert identity.next_expiry(w.customers["b"], POLICY) == T0 + POLICY.window
    assert identity.next_expiry(w.customers["a"], POLICY) == T0 + POLICY.window
    # A use is announced as before: no `used` on the wire.
    (seen,) = identity.announce(IdentityState(), "c", {"phone": phone}, T0, [], POLICY)
    assert seen.used is None and b'"used"' not in msgspec.json.encode(seen)
    assert b'"used"' in msgspec.json.encode(again[0])


def test_an_identifier_announced_again_after_the_window_links_no_one() -> None:
    # The identity stage has forgotten a customer whose last use is older than the
    # window; an announcement made again of that use brings no one back.
    phone = h("+62 811 0000 6666")
    w = World()
    w.event("a", T0, phone=phone)
    for n in range(POLICY.common_after - 1):
        w.event(f"x{n}", T0 + POLICY.window + timedelta(days=5), phone=phone)
    late = T0 + POLICY.window + timedelta(days=10)
    w.blacklist("a", late)
    # Neither linked to the others nor counted among them: the identifier is not common.
    assert w.of(AccountLinked, "a") == []
    w.event("b", late + timedelta(days=1), phone=phone)
    assert {e.other for e in w.of(AccountLinked, "b")} == {
        f"x{n}" for n in range(POLICY.common_after - 1)
    }
    assert "a" not in w.identifiers[f"phone:{phone}".encode()].customers


def test_a_sighting_heard_out_of_order_links_no_earlier_than_the_pair_began() -> None:
    # After a restart the identity stage can hear of an older use after a newer one. The
    # pair still began when the second customer first used the identifier, and a link
    # made then is not dated before it (the second account did not exist yet).
    phone = h("+62 811 0000 7777")
    w = World()
    w.event("b", T0 + timedelta(days=30), phone=phone)
    w.event("a", T0, phone=phone)
    assert sorted((e.customer_id, e.at) for e in w.of(AccountLinked)) == [
        ("a", T0 + timedelta(days=30)),
        ("b", T0 + timedelta(days=30)),
    ]
    # A report claiming an announcement before the pair began is placed at the pair.
    shared = Shared("a", "b", "phone", phone[:12], T0, T0 + timedelta(days=30), (), sighted=T0)
    assert identity.heard_at(shared) == T0 + timedelta(days=30)
    # And an earlier use heard late still counts from when it was.
    ident = IdentifierState()
    identity.sight(ident, Sighting("c", "phone", phone, T0 + timedelta(days=30)), POLICY)
    identity.sight(ident, Sighting("c", "phone", phone, T0 + timedelta(days=20)), POLICY)
    assert (ident.customers["c"].first, ident.customers["c"].last) == (
        T0 + timedelta(days=20),
        T0 + timedelta(days=30),
    )


def test_a_flag_names_the_evidence_that_made_the_link_whatever_came_in_after_it() -> None:
    # One instant's reports to "x" about "xr": the phone and the address "xr" was first
    # seen with, then the phone again once "xr", told of the link, announced its
    # blacklisting (the same instant). Read as they came, the address comes before that
    # second report; read again after a restart, the three are held and go by
    # identifier, the address last. The flag is the same either way.
    phone, address = h("+62811")[:12], h("street 1")[:12]
    listing = (("shop-5", T0, T0 + timedelta(days=90)),)
    seen_before = T0 - timedelta(days=40)
    first_phone = Shared("x", "xr", "phone", phone, seen_before, T0, ())
    first_address = Shared("x", "xr", "shipping_address", address, seen_before, T0, ())
    told_phone = Shared("x", "xr", "phone", phone, seen_before, T0, listing)

    def effects(*reports: Shared) -> list[LinkEffect]:
        state = IdentityState()
        return [e for r in reports for e in identity.receive(state, "x", r, POLICY)]

    as_they_came = effects(first_phone, first_address, told_phone)
    read_again = effects(first_phone, told_phone, first_address)
    assert as_they_came == read_again
    linked, flagged = as_they_came
    assert isinstance(linked, AccountLinked) and isinstance(flagged, LinkedAccountFlagged)
    assert flagged.evidence == linked.evidence == ((f"phone:{phone}", seen_before),)


def test_a_flag_names_no_evidence_that_aged_out_since_the_link_was_made() -> None:
    phone, email = h("+62811")[:12], h("a@x")[:12]
    later = T0 + timedelta(days=300)
    listing = (("shop-1", later, later + timedelta(days=90)),)
    state = IdentityState()
    linked = identity.receive(state, "x", Shared("x", "y", "phone", phone, T0, T0, ()), POLICY)
    assert [type(e) for e in linked] == [AccountLinked]
    mail = Shared("x", "y", "email", email, later, later, ())
    identity.receive(state, "x", mail, POLICY)
    # The phone ages out; the link stands on the email.
    assert identity.age(state, "x", T0 + timedelta(days=400), POLICY) == []
    told = Shared("x", "y", "email", email, later, later, listing, sighted=later)
    (flagged,) = identity.receive(state, "x", told, POLICY)
    assert isinstance(flagged, LinkedAccountFlagged)
    assert flagged.evidence == ((f"email:{email}", later),)


def test_a_flag_heard_after_an_identifier_of_its_link_turned_common_names_it_as_in_time() -> None:
    # Seen a year's traffic (seed 11 of test_report_order.py's, 4,000 messages): the link
    # made by a device and a phone, the device turning common months later while the
    # phone holds the link. The other account's blacklisting of before that, heard
    # after the device was dropped (an announcement made again, applied as it arrives),
    # named the phone alone: what a flag names went by the order reports were read.
    device, phone = h("shared tablet")[:12], h("+62812")[:12]
    seen = T0 - timedelta(days=12)
    made_by = ((f"device:{device}", seen), (f"phone:{phone}", seen))
    listing = (("shop-3", T0, T0 + timedelta(days=90)),)
    common = T0 + timedelta(days=210)
    reports = [
        Shared("x", "xr", "device", device, seen, T0, ()),
        Shared("x", "xr", "phone", phone, seen, T0, ()),
    ]
    told = Shared("x", "xr", "phone", phone, seen, T0, listing)
    dropped = Dropped("x", "device", device, common)

    def flags(*later: Report) -> list[LinkEffect]:
        state = IdentityState()
        effects = [e for r in (*reports, *later) for e in identity.receive(state, "x", r, POLICY)]
        return [e for e in effects if isinstance(e, LinkedAccountFlagged)]

    in_time = flags(told, dropped)
    heard_after = flags(dropped, told)
    assert in_time == heard_after
    assert [f.evidence for f in in_time] == [made_by]
    # A blacklisting that began after the device turned common names the phone alone.
    since = common + timedelta(days=1)
    later_listing = (("shop-4", since, since + timedelta(days=90)),)
    (after,) = flags(dropped, Shared("x", "xr", "phone", phone, seen, since, later_listing))
    assert after.evidence == ((f"phone:{phone}", seen),)
