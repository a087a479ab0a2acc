"""Linked accounts: customers who share hashed identifiers, and links to blacklisted ones.

Two stages, both pure here and wired to Kafka by the customer agent:

- The **customer stage** (keyed by customer) announces each hashed identifier
  a customer's events carry (`announce`), once, again when the customer's
  blacklistings change, and again when the last announcement is getting old.
  Announcements go to the identity topic, keyed by identifier.
- The **identity stage** (keyed by identifier, `sight`) keeps per identifier
  the customers seen with it, at most `common_after` of them. Each new
  customer on an identifier is reported to every customer already there and
  the other way round (`Shared`); the customer stage receives those reports
  (`receive`) and keeps a bounded list of linked accounts. An identifier seen
  on more customers than `common_after` (a shared office, a pickup point, a
  family's tablet) is common: it links nothing, and the customers it linked
  are told to drop it (`Dropped`).

A link is strong when the two customers share an identifier of a strong kind
(phone, e-mail, device, payment instrument by default) or identifiers of at
least `min_kinds` kinds (a shipping address alone is a household, not a
person). A strong link to a customer on a blacklist raises
`linked_account_flagged`; evidence older than `window` ages out, and a link
that is no longer strong raises `account_unlinked`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal, TypeAlias, cast, get_args

import msgspec

from hitrun.agents import unpaid
from hitrun.agents.effects import Effect, EvidenceLine
from hitrun.agents.policy import UnpaidPolicy
from hitrun.agents.unpaid import UnpaidState
from hitrun.schemas.records import IDENTIFIER_KINDS

# A blacklisting as the identity stage passes it on: scope (shop id or "*"), since and
# until (when it ends, or ended: the stage keeps ended ones for the link window, so
# that a customer it hears of late is judged by the blacklistings of that time).
Listed = tuple[str, datetime, datetime]
# Ended blacklistings kept per customer on an identifier.
MAX_LISTINGS = 8

# How much of a hash an alert, the "why" and a customer's link list show and keep.
HASH_PREFIX = 12
# Strikes a customer's announcements carry (policy `linked_strikes: shared`), the latest.
MAX_STRIKES = 8

Identifier: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Kind: TypeAlias = Literal["phone", "email", "device", "payment_instrument", "shipping_address"]
Prefix: TypeAlias = Annotated[str, msgspec.Meta(pattern=f"^[0-9a-f]{{{HASH_PREFIX}}}$")]
assert set(IDENTIFIER_KINDS) == set(get_args(Kind))


class StrikeNote(msgspec.Struct, frozen=True, array_like=True):
    """One of a customer's strikes as linked accounts hear of it."""

    scope: Identifier
    shop_id: Identifier
    order_id: Identifier
    reason: Identifier
    at: datetime
    reversed: bool = False


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """When shared identifiers make a link, and how much the stages remember."""

    strong_kinds: frozenset[str] = frozenset({"phone", "email", "payment_instrument"})
    min_kinds: int = 2
    # K: an identifier seen on more customers than this is common and links nothing.
    common_after: int = 5
    window: timedelta = timedelta(days=365)
    max_identifiers: int = 16  # announced per customer
    max_links: int = 16  # linked accounts kept per customer

    @property
    def refresh(self) -> timedelta:
        """An identifier is announced again when its last announcement is this old."""
        return self.window / 8


# --- the identity stage: one state per identifier -----------------------------------


class Seen(msgspec.Struct, gc=False, omit_defaults=True):
    """One customer on an identifier: when first and last seen with it, and their listings."""

    first: datetime
    last: datetime
    listed: list[Listed] = msgspec.field(default_factory=list)
    strikes: list[StrikeNote] = msgspec.field(default_factory=list)


class IdentifierState(msgspec.Struct, gc=False, omit_defaults=True):
    """The customers seen with one identifier, or, once it is common, until when it stays so."""

    customers: dict[str, Seen] = msgspec.field(default_factory=dict)
    common_until: datetime | None = None

    def is_empty(self) -> bool:
        return not self.customers and self.common_until is None


class Sighting(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An announcement (the identity topic's record, keyed "kind:hash"): `customer` used
    identifier `kind`:`hash` at `at`; `listed`: the blacklists the customer is on (scope,
    since, until); `strikes`: its latest strikes, when a shop counts them together.
    `forget`: the customer was erased; the identifier forgets them. `used`: when the
    customer last used the identifier, where that is before `at`: an announcement made
    again (a blacklisting began or ended, strikes changed) is not a use, and keeps no
    link alive (`last_use`)."""

    customer: Identifier
    kind: Kind
    hash: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    at: datetime
    listed: tuple[tuple[Identifier, datetime, datetime], ...] = ()
    forget: bool = False
    strikes: tuple[StrikeNote, ...] = ()
    used: datetime | None = None

    @property
    def key(self) -> bytes:
        return f"{self.kind}:{self.hash}".encode()


class Shared(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="type",
    tag="shared",
):
    """To `customer`: `other` shares identifier `kind`:`prefix`, both seen with it by
    `evidence_at`, paired since `at`. `sighted`: the time of the announcement that told
    it, where that is not `at` (one of the two announced again, later); the report
    takes its place among the others by it (`heard_at`). (A `Dropped` or `Forgotten`
    is at its announcement's time.)"""

    customer: Identifier
    other: Identifier
    kind: Kind
    prefix: Prefix
    evidence_at: datetime
    at: datetime
    other_listed: tuple[tuple[Identifier, datetime, datetime], ...]
    other_strikes: tuple[StrikeNote, ...] = ()
    sighted: datetime | None = None


class Dropped(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="dropped"
):
    """To `customer`: identifier `kind`:`prefix` became common; it links nothing any more."""

    customer: Identifier
    kind: Kind
    prefix: Prefix
    at: datetime


class Forgotten(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="forgotten"
):
    """To `customer`: `other` was erased; no link to them stays."""

    customer: Identifier
    other: Identifier
    at: datetime


# The links topic's records, keyed by the customer they are for.
Report = Shared | Dropped | Forgotten


def last_use(seen: Sighting) -> datetime:
    """When the announcing customer last used the identifier (never after the announcement)."""
    return seen.at if seen.used is None else min(seen.used, seen.at)


def heard_at(report: Report) -> datetime:
    """The time of the announcement a report answers, never before the pair began: where
    it goes among the others, and when what it decides takes effect."""
    if isinstance(report, Shared) and report.sighted is not None:
        return max(report.sighted, report.at)
    return report.at


def _merged(known: list[Listed], seen: Sighting, horizon: datetime) -> list[Listed]:
    """A customer's blacklistings as last announced, with those it no longer has ended at the
    announcement, ended ones older than `horizon` dropped."""
    current = {(scope, since): until for scope, since, until in seen.listed}
    merged = dict(current)
    for scope, since, until in known:
        if (scope, since) not in current:
            merged[(scope, since)] = min(until, seen.at)
    kept = sorted(
        ((scope, since, until) for (scope, since), until in merged.items() if until >= horizon),
        key=lambda listing: listing[1],
    )
    return kept[-MAX_LISTINGS:]


def sight(state: IdentifierState, seen: Sighting, policy: LinkPolicy) -> list[Report]:
    """Take an announcement into the identifier's state; return what each customer must hear."""
    prefix = seen.hash[:HASH_PREFIX]
    if seen.forget:
        if state.customers.pop(seen.customer, None) is None:
            return []
        return [Forgotten(other, seen.customer, seen.at) for other in sorted(state.customers)]
    horizon = seen.at - policy.window
    used = last_use(seen)
    if state.common_until is not None:
        if state.common_until >= seen.at:
            state.common_until = max(state.common_until, used + policy.window)
            return []
        state.common_until = None  # every sighting that made it common has aged out
    for customer in [c for c, s in state.customers.items() if s.last < horizon]:
        del state.customers[customer]
    known = state.customers.get(seen.customer)
    if known is None and used < horizon:
        return []  # announced again, of a use already past the window: it links nothing
    if known is None and len(state.customers) >= policy.common_after:
        reports: list[Report] = [
            Dropped(customer, seen.kind, prefix, seen.at) for customer in sorted(state.customers)
        ]
        state.customers.clear()
        state.common_until = used + policy.window
        return reports
    strikes = list(seen.strikes)[-MAX_STRIKES:]
    if known is None:
        listed = list(seen.listed)[-MAX_LISTINGS:]
        state.customers[seen.customer] = Seen(used, used, listed, strikes)
    else:
        # Heard out of order (a restart sends sightings again), an earlier use still counts.
        known.first = min(known.first, used)
        known.last = max(known.last, used)
        known.listed = _merged(known.listed, seen, horizon)
        known.strikes = strikes
    reports = []
    for other in sorted(state.customers):
        if other == seen.customer:
            continue
        theirs, mine = state.customers[other], state.customers[seen.customer]
        # Seen together by `both`; paired since `since`, whichever sighting came in first.
        both, since = min(theirs.last, mine.last), max(theirs.first, mine.first)
        # A later announcement of either also tells when it was made (`heard_at`); one
        # heard out of order, before the pair began, tells nothing earlier than that.
        told = seen.at if seen.at > since else None
        # Each of the two hears of the other, with the other's listings and strikes.
        for to, about, known in ((seen.customer, other, theirs), (other, seen.customer, mine)):
            news = (tuple(known.listed), tuple(known.strikes))
            reports.append(Shared(to, about, seen.kind, prefix, both, since, *news, told))
    return reports


# --- the customer stage: what one customer knows of its identifiers and links -------


class Link(msgspec.Struct, gc=False, omit_defaults=True):
    """Another customer this one shares identifiers with."""

    # "kind:prefix" -> seen by
    evidence: dict[str, datetime] = msgspec.field(default_factory=dict)
    # The other's blacklistings, last heard.
    listed: list[Listed] = msgspec.field(default_factory=list)
    strong_since: datetime | None = None
    # The other's blacklistings (scope, since) already flagged for.
    flagged: list[tuple[str, datetime]] = msgspec.field(default_factory=list)
    generation: int = 0  # how many times the link became strong
    # The evidence that made it strong, this generation: what its flags name.
    linked_by: list[tuple[str, datetime]] = msgspec.field(default_factory=list)
    # Of that evidence, what an identifier turning common took off while the link stood
    # on, and when: a flag of an earlier time, heard after, still names it.
    dropped: dict[str, datetime] = msgspec.field(default_factory=dict)
    strikes: list[StrikeNote] = msgspec.field(default_factory=list)  # the other's, last heard
    # The other's strikes (order ids) a blacklisting of this customer already counted.
    counted: list[str] = msgspec.field(default_factory=list)


class AgedOut(msgspec.Struct, gc=False, array_like=True):
    """A strong link that aged out, or that an identifier turning common took back: strong
    from `since` until `until`, flagged for those blacklistings (scope, since), made by
    that evidence. A report of a time it stood, heard after it ended, is decided against
    it (`_heard_late`)."""

    since: datetime
    until: datetime
    flagged: list[tuple[str, datetime]]
    linked_by: list[tuple[str, datetime]]
    # Taken back because these identifiers turned common ("kind:prefix"), not aged out.
    common: list[str] = msgspec.field(default_factory=list)
    # What of `linked_by` turned common before, and when (`Link.dropped`).
    dropped: dict[str, datetime] = msgspec.field(default_factory=dict)


class IdentityState(msgspec.Struct, gc=False, omit_defaults=True):
    """The customer's announced identifiers ("kind:hash" -> last announced) and links."""

    announced: dict[str, datetime] = msgspec.field(default_factory=dict)
    links: dict[str, Link] = msgspec.field(default_factory=dict)
    # How far its links have aged (`LinkRules.expire`): a report of an earlier time
    # heard after that brings no evidence that had aged out by then.
    aged: datetime | None = None
    # The strong links that aged out, by the other account, while a report of a time
    # they stood may still come (`age`).
    aged_out: dict[str, AgedOut] = msgspec.field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.announced and not self.links


class AccountLinked(msgspec.Struct, frozen=True):
    """The customer and `other` now share identifiers the policy calls strong enough."""

    customer_id: str
    other: str
    at: datetime
    generation: int
    evidence: tuple[tuple[str, datetime], ...]


class LinkedAccountFlagged(msgspec.Struct, frozen=True):
    """The customer is linked to `other`, who is on these blacklists (scope, since)."""

    customer_id: str
    other: str
    at: datetime
    listings: tuple[Listed, ...]
    evidence: tuple[tuple[str, datetime], ...]


class AccountUnlinked(msgspec.Struct, frozen=True):
    """The link to `other` (of that `generation`) is no longer strong, for `cause`."""

    customer_id: str
    other: str
    at: datetime
    generation: int
    cause: str  # "evidence_aged_out", "identifier_common", "evicted" or "erased"


LinkEffect = AccountLinked | LinkedAccountFlagged | AccountUnlinked


def announce(
    state: IdentityState,
    customer_id: str,
    identifiers: dict[str, str] | None,
    at: datetime,
    listed: Iterable[Listed],
    policy: LinkPolicy,
    again: bool = False,
    strikes: Iterable[StrikeNote] = (),
) -> list[Sighting]:
    """The sightings to send for an event's identifiers (all known ones when `again`: the
    customer's blacklistings or strikes changed)."""
    scopes = tuple(sorted(listed))
    notes = tuple(sorted(strikes, key=lambda n: (n.at, n.order_id)))[-MAX_STRIKES:]
    # Announcements older than the window are forgotten as of the event's own time, not
    # when the links age (that waits for the link reports).
    horizon = at - policy.window
    for key in [k for k, last in state.announced.items() if last < horizon]:
        del state.announced[key]
    due: list[str] = []
    for kind, hashed in (identifiers or {}).items():
        key = f"{kind}:{hashed}"
        last = state.announced.get(key)
        if last is None or at - last >= policy.refresh:
            due.append(key)
            state.announced[key] = at
    if again:
        due = sorted(state.announced)
    while len(state.announced) > policy.max_identifiers:
        oldest = min(state.announced, key=lambda k: (state.announced[k], k))
        del state.announced[oldest]
    sightings = []
    for key in sorted(set(due)):
        if key in state.announced:
            kind, hashed = key.split(":", 1)
            # Made again, the announcement tells the last use it announced, not a new one.
            used = state.announced[key]
            sightings.append(
                Sighting(
                    customer_id,
                    cast(Kind, kind),
                    hashed,
                    at,
                    scopes,
                    strikes=notes,
                    used=used if used < at else None,
                )
            )
    return sightings


def strong(link: Link, policy: LinkPolicy) -> bool:
    kinds = {key.split(":", 1)[0] for key in link.evidence}
    return bool(kinds & policy.strong_kinds) or len(kinds) >= policy.min_kinds


def receive(
    state: IdentityState, customer_id: str, report: Report, policy: LinkPolicy
) -> list[LinkEffect]:
    """Take what the identity stage reported into the customer's links; return the alerts."""
    effects: list[LinkEffect] = []
    if isinstance(report, Forgotten):
        gone = state.links.pop(report.other, None)
        if gone is not None and gone.strong_since is not None:
            unlinked = AccountUnlinked(
                customer_id, report.other, report.at, gone.generation, "erased"
            )
            effects.append(unlinked)
        return effects
    if isinstance(report, Dropped):
        key = f"{report.kind}:{report.prefix}"
        for other in sorted(state.links):
            if key in state.links[other].evidence:
                effects += _drop_evidence(
                    state, customer_id, other, [key], report.at, policy, "identifier_common"
                )
        return effects
    # What the report makes, it makes when its announcement was made: a link evicted or
    # taken back earlier and told again by a later announcement is linked again then.
    at = heard_at(report)
    key = f"{report.kind}:{report.prefix}"
    # As of `at`, or of how far the links have aged if further: evidence aged out by
    # then counts no more, whenever the report arrives (a strong link's ages out at its
    # own time: `LinkRules.expire`, before this).
    horizon = (at if state.aged is None or state.aged < at else state.aged) - policy.window
    past = state.aged_out.get(report.other)
    if (
        past is not None
        and past.since <= at < past.until
        and (report.evidence_at <= horizon or key in past.common)
    ):
        return _heard_late(customer_id, report, past, at)
    link = state.links.setdefault(report.other, Link())
    for stale in [k for k, seen in link.evidence.items() if seen <= horizon]:
        del link.evidence[stale]
    if report.evidence_at > horizon:
        link.evidence[key] = max(report.evidence_at, link.evidence.get(key, report.evidence_at))
    link.listed = sorted(report.other_listed)
    link.strikes = list(report.other_strikes)
    effects += _settle(state, customer_id, report.other, at, policy, "evidence_aged_out")
    while len(state.links) > policy.max_links:
        # The link with the oldest evidence goes first; one to a listed customer last.
        victim = min(
            state.links,
            key=lambda o: (bool(state.links[o].listed), max(state.links[o].evidence.values()), o),
        )
        gone = state.links.pop(victim)
        if gone.strong_since is not None:
            effects.append(AccountUnlinked(customer_id, victim, at, gone.generation, "evicted"))
    return effects


def age(
    state: IdentityState, customer_id: str, now: datetime, policy: LinkPolicy
) -> list[LinkEffect]:
    """Drop evidence and announcements older than the window at `now`; return the unlinks."""
    horizon = now - policy.window
    for key in [k for k, at in state.announced.items() if at < horizon]:
        del state.announced[key]
    effects: list[LinkEffect] = []
    for other in [o for o, past in state.aged_out.items() if past.until <= horizon]:
        del state.aged_out[other]
    for other in sorted(state.links):
        # Evidence seen at t counts until t + window: `next_expiry` is when it stops.
        stale = [k for k, at in state.links[other].evidence.items() if at <= horizon]
        if stale:
            effects += _drop_evidence(
                state, customer_id, other, stale, now, policy, "evidence_aged_out"
            )
    return effects


def _drop_evidence(
    state: IdentityState,
    customer_id: str,
    other: str,
    keys: list[str],
    at: datetime,
    policy: LinkPolicy,
    cause: str,
) -> list[LinkEffect]:
    """Take evidence `keys` off the link to `other` at `at`; a strong link that no longer
    stands is remembered as it stood (`aged_out`) for the reports of its time still to
    come. The unlinks."""
    link = state.links[other]
    since, flagged, linked_by = link.strong_since, list(link.flagged), list(link.linked_by)
    dropped = dict(link.dropped)
    for key in keys:
        del link.evidence[key]
    unlinked = _settle(state, customer_id, other, at, policy, cause)
    if unlinked and since is not None:
        common = keys if cause == "identifier_common" else []
        state.aged_out[other] = AgedOut(since, at, flagged, linked_by, common, dropped)
    elif cause == "identifier_common" and link.strong_since is not None:
        for key in keys:
            if any(made == key for made, _seen in link.linked_by):
                link.dropped.setdefault(key, at)
    return unlinked


def _standing(
    linked_by: list[tuple[str, datetime]],
    dropped: dict[str, datetime],
    at: datetime,
    evidence: dict[str, datetime] | None = None,
) -> tuple[tuple[str, datetime], ...]:
    """Of the evidence that made a link, what it still had at `at`: what it has now
    (`evidence`; None: all of it), and what an identifier turning common took off after
    `at` (`dropped`)."""
    return tuple(
        (key, seen)
        for key, seen in linked_by
        if (key in dropped and dropped[key] > at)
        or (key not in dropped and (evidence is None or key in evidence))
    )


def _heard_late(customer_id: str, report: Shared, past: AgedOut, at: datetime) -> list[LinkEffect]:
    """A report of time `at`, when the link stood, heard after it aged out: the flags it
    would have raised then (a blacklisting through the link ends where the link did:
    `carry_listings`), and no link made again."""
    effects: list[LinkEffect] = []
    for scope, since, until in sorted(report.other_listed):
        flagged_at = max(past.since, since)
        if (scope, since) in past.flagged or flagged_at >= min(until, past.until):
            continue
        past.flagged.append((scope, since))
        listing = ((scope, since, until),)
        named = _standing(past.linked_by, past.dropped, flagged_at) or tuple(past.linked_by)
        effects.append(LinkedAccountFlagged(customer_id, report.other, flagged_at, listing, named))
    return effects


def next_expiry(
    state: IdentityState, policy: LinkPolicy, after: datetime | None = None
) -> datetime | None:
    """When the oldest evidence of a strong link ages out (None: no strong link), or the
    oldest that ages out after `after`."""
    times = [
        min(link.evidence.values()) + policy.window
        for link in state.links.values()
        if link.strong_since is not None and link.evidence
    ]
    if after is not None:
        times = [t for t in times if t > after]
    return min(times) if times else None  # min(..., default=None) parses keywords: slower


def _settle(
    state: IdentityState,
    customer_id: str,
    other: str,
    at: datetime,
    policy: LinkPolicy,
    cause: str,
) -> list[LinkEffect]:
    """Bring one link's standing up to its evidence: linked, flagged, or unlinked."""
    link = state.links[other]
    evidence = tuple(sorted(link.evidence.items()))
    effects: list[LinkEffect] = []
    if not strong(link, policy):
        if link.strong_since is not None:
            effects.append(AccountUnlinked(customer_id, other, at, link.generation, cause))
        link.strong_since = None
        link.flagged = []
        link.linked_by = []
        link.dropped = {}
        if not link.evidence:
            del state.links[other]
        return effects
    if link.strong_since is None:
        state.aged_out.pop(other, None)
        link.strong_since = at
        link.generation += 1
        link.linked_by = list(evidence)
        link.dropped = {}
        effects.append(AccountLinked(customer_id, other, at, link.generation, evidence))
    # Flagged for each blacklisting of the other's that overlaps the link in event time,
    # whenever the stage happened to hear of either, naming the evidence that made the
    # link: what else it heard by then depends on the order reports of one instant
    # came in (a report of the other's blacklisting is made again, of the same instant,
    # once the other heard of the link; after a restart it is read with the first ones).
    # Of that evidence, what still stood at the flag's time (not aged out, not turned
    # common by then: a flag heard of after an identifier turned common names it all the
    # same); a link whose evidence that made it has all aged out (strong by later
    # evidence), or stored before `linked_by` was kept, names its evidence as it stands.
    for scope, since, until in link.listed:
        if (scope, since) in link.flagged or max(link.strong_since, since) >= until:
            continue
        link.flagged.append((scope, since))
        flagged_at = max(link.strong_since, since)
        listing = ((scope, since, until),)
        named = _standing(link.linked_by, link.dropped, flagged_at, link.evidence) or evidence
        effects.append(LinkedAccountFlagged(customer_id, other, flagged_at, listing, named))
    return effects


def forget(state: IdentityState, customer_id: str, at: datetime) -> list[Sighting]:
    """The customer is erased: the sightings that make each identifier forget them."""
    return [
        Sighting(customer_id, cast(Kind, kind), hashed, at, forget=True)
        for kind, hashed in (key.split(":", 1) for key in sorted(state.announced))
    ]


def carry_listings(
    listed: UnpaidState,
    state: IdentityState,
    customer_id: str,
    effects: Iterable[LinkEffect],
    extends: Callable[[str], bool],
) -> list[Effect]:
    """Blacklistings that follow a strong link (shops whose `extends(scope)`: policy
    `linked_accounts: blacklist`): the customer is on the linked account's blacklist
    while both the link and that blacklisting last. Only a customer's own blacklistings
    are announced (`announce` callers), so a listing never travels on down a chain."""
    changes: list[Effect] = []
    for effect in effects:
        if isinstance(effect, LinkedAccountFlagged):
            for scope, since, until in effect.listings:
                if extends(scope):
                    reason = (
                        f"linked to account {effect.other}, on this blacklist since "
                        f"{since.isoformat()} (policy linked_accounts: blacklist)"
                    )
                    changes += unpaid.extend_listing(
                        listed, customer_id, effect.other, scope, effect.at, until, reason
                    )
        elif isinstance(effect, AccountUnlinked):
            unpaid.end_linked(listed, effect.other, None, effect.at)
    # A linked account's blacklisting cut short (a strike reversed, an operator) ends
    # this one by the same time: its listings arrive with every report of the link.
    for listing in [*listed.listings.values(), *listed.waiting.values()]:
        link = None if listing.linked_to is None else state.links.get(listing.linked_to)
        if listing.linked_to is not None and (link is None or link.strong_since is None):
            past = state.aged_out.get(listing.linked_to)
            if past is not None:
                unpaid.end_linked(listed, listing.linked_to, listing.scope, past.until)
        if link is None or listing.linked_to is None:
            continue
        basis = [
            (since, until)
            for scope, since, until in link.listed
            if scope == listing.scope and since <= listing.since
        ]
        if basis:
            unpaid.end_linked(listed, listing.linked_to, listing.scope, max(basis)[1])
    return changes


def strike_notes(listed: UnpaidState) -> list[StrikeNote]:
    """The customer's strikes as its announcements carry them."""
    return [
        StrikeNote(s.scope, s.shop_id, s.order_id, s.reason, s.at, s.reversed)
        for s in listed.strikes
    ]


def strikes_together(
    listed: UnpaidState,
    state: IdentityState,
    customer_id: str,
    policy_of: Callable[[str], UnpaidPolicy],
    now: datetime,
) -> list[Effect]:
    """Strikes counted together across strong links (shops whose policy says
    `linked_strikes: shared`): the customer is blacklisted when its own strikes and its
    linked accounts' reach the threshold within the window, at the time the last of them
    or of the links came; a blacklisting that counted a linked strike since reversed is
    undone (at `now`: the time of the report that tells of it) when too few strikes stand
    without it."""
    linked = {o: link for o, link in sorted(state.links.items()) if link.strong_since is not None}
    changes = _recheck_together(listed, linked, customer_id, policy_of, now)
    for scope in sorted({n.scope for link in linked.values() for n in link.strikes}):
        policy = policy_of(scope)
        if policy.linked_strikes == "shared" and not unpaid.on_own_list(listed, scope):
            changes += _count_together(listed, linked, customer_id, scope, policy)
    return changes


def _recheck_together(
    listed: UnpaidState,
    linked: dict[str, Link],
    customer_id: str,
    policy_of: Callable[[str], UnpaidPolicy],
    now: datetime,
) -> list[Effect]:
    changes: list[Effect] = []
    notes = {(o, n.order_id): n for o, link in linked.items() for n in link.strikes}
    for listing in [lst for lst in listed.listings.values() if lst.linked_evidence]:
        # A strike no longer heard of (aged out on its account's side) still stands.
        standing = sum(
            1
            for key in listing.linked_evidence
            if key[0] in linked and not (key in notes and notes[key].reversed)
        )
        others = ", ".join(sorted({other for other, _ in listing.linked_evidence}))
        reason = f"a strike it counted of linked account {others} was reversed, or the link ended"
        policy = policy_of(listing.scope)
        at = max(now, listing.since)
        changes += unpaid.recheck_listing(
            listed, customer_id, listing, standing, at, reason, policy
        )
    return changes


def _count_together(
    listed: UnpaidState,
    linked: dict[str, Link],
    customer_id: str,
    scope: str,
    policy: UnpaidPolicy,
) -> list[Effect]:
    own = unpaid.live_strikes(listed, scope)
    theirs = [
        (other, n)
        for other, link in linked.items()
        for n in link.strikes
        if n.scope == scope and not n.reversed and n.order_id not in link.counted
    ]
    if not theirs:
        return []
    at = max(
        [s.at for s in own]
        + [n.at for _, n in theirs]
        + [cast(datetime, linked[other].strong_since) for other, _ in theirs]
    )
    own = [s for s in own if at - policy.strike_window < s.at <= at]
    theirs = [(o, n) for o, n in theirs if at - policy.strike_window < n.at <= at]
    if not theirs or len(own) + len(theirs) < policy.strike_threshold:
        return []
    for other, note in theirs:
        counted = linked[other].counted
        counted.append(note.order_id)
        del counted[: -2 * MAX_STRIKES]
    lines = [(o, EvidenceLine(n.order_id, n.shop_id, n.reason, n.at)) for o, n in theirs]
    return unpaid.enlist(listed, customer_id, scope, at, own, lines, policy)
