"""Unpaid after checkout, as pure functions: reminders, expiry strikes and the blacklist.

`handle` applies one input event; `advance` fires every timer due up to `now`.
Neither reads a clock nor does I/O: the agent passes the stream clock in and
dispatches the returned effects.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from hitrun.agents.effects import (
    Blacklist,
    CloseOrder,
    DropUnmatchedPayment,
    Effect,
    EndedListing,
    EvidenceLine,
    OrderEvidence,
    RecordPurchase,
    RecordStrike,
    ReminderLine,
    ReportRecovery,
    ReverseStrike,
    SendReminder,
    Unblacklist,
)
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.schemas.records import (
    AdminActionRequested,
    CheckoutConfirmed,
    CustomerEvent,
    OrderStatusChanged,
    PaymentAttempted,
)


class OpenOrder(msgspec.Struct, gc=False, omit_defaults=True):
    """A confirmed order awaiting payment."""

    order_id: str
    shop_id: str
    checkout_at: datetime
    deadline: datetime | None  # None: cash on delivery, which has no payment deadline
    total_minor: int
    currency: str
    method: str
    time_zone: str | None
    paid_minor: int = 0
    steps: list[datetime] = msgspec.field(default_factory=list)  # planned reminders not yet sent
    reminders_sent: int = 0


class ExpiredOrder(msgspec.Struct, gc=False, omit_defaults=True):
    """An order that expired unpaid; a payment before `grace_until` still reverses its strike."""

    order_id: str
    shop_id: str
    expired_at: datetime
    grace_until: datetime
    total_minor: int
    currency: str
    paid_minor: int


class Strike(msgspec.Struct, gc=False, omit_defaults=True):
    order_id: str
    shop_id: str
    scope: str
    at: datetime
    reason: str  # "unpaid", "cod_refused" or "buyer_cancelled"
    reversed: bool = False
    # Set when the strike led to a blacklisting, so it cannot lead to another one.
    consumed: bool = False


class Listing(msgspec.Struct, gc=False, omit_defaults=True):
    """The customer's entry on one blacklist (a shop's, or "*" for the platform's)."""

    scope: str
    since: datetime
    until: datetime
    offence: int
    manual: bool
    actor: str
    evidence: list[str] = msgspec.field(default_factory=list)
    # Set when the listing extends a linked account's blacklisting (policy
    # `linked_accounts: blacklist`): it rests on that account, not on strikes of
    # this customer's, so it counts as no offence and is passed on to no one.
    linked_to: str | None = None
    # Strikes of linked accounts this blacklisting counted (policy `linked_strikes:
    # shared`): (account, order id).
    linked_evidence: list[tuple[str, str]] = msgspec.field(default_factory=list)
    # Through a link: the reason its alert gave (given again when it resumes).
    reason: str | None = None


class OwnEnded(msgspec.Struct, gc=False, omit_defaults=True):
    """The customer's last blacklisting of its own on one list: when it began, when it
    ended, and whether an operator lifted it (which ends a listing through a link that
    waited for it too)."""

    since: datetime
    end: datetime
    lifted: bool = False


class Offences(msgspec.Struct, gc=False, omit_defaults=True):
    count: int
    last_end: datetime | None = None


class HeldPayment(msgspec.Struct, gc=False, omit_defaults=True):
    """A payment (or `paid` status) that arrived before its checkout, kept for a grace period."""

    event_id: str
    at: datetime
    hold_until: datetime
    amount_minor: int | None  # None: the order was marked paid in full
    currency: str | None


class UnpaidState(msgspec.Struct, gc=False, omit_defaults=True):
    """One customer's state for this detector. Empty containers mean nothing to remember."""

    open: dict[str, OpenOrder] = msgspec.field(default_factory=dict)
    expired: dict[str, ExpiredOrder] = msgspec.field(default_factory=dict)
    closed: dict[str, datetime] = msgspec.field(default_factory=dict)
    strikes: list[Strike] = msgspec.field(default_factory=list)
    listings: dict[str, Listing] = msgspec.field(default_factory=dict)
    offences: dict[str, Offences] = msgspec.field(default_factory=dict)
    held: dict[str, list[HeldPayment]] = msgspec.field(default_factory=dict)
    seen: dict[str, datetime] = msgspec.field(default_factory=dict)
    # The digest (`event_digest`) of each seen event, to tell the same event sent again
    # from another event under the same id; absent for events seen by older versions.
    digests: dict[str, int] = msgspec.field(default_factory=dict)
    last_reminder_at: datetime | None = None
    # Listings through a link (policy `linked_accounts: blacklist`) set aside while the
    # customer is on the same list by its own: they resume when it ends.
    waiting: dict[str, Listing] = msgspec.field(default_factory=dict)
    # The last blacklisting of its own on each list that ended, for a linked account's
    # blacklisting heard of only after it ended (`extend_listing`).
    ended: dict[str, OwnEnded] = msgspec.field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (
            self.open
            or self.expired
            or self.closed
            or self.strikes
            or self.listings
            or self.offences
            or self.held
            or self.seen
            or self.digests
            or self.last_reminder_at
            or self.waiting
            or self.ended
        )


@dataclass(slots=True)
class _Run:
    """What one call needs besides the state: who, which policies, and the effects so far."""

    customer_id: str
    policies: Policies
    effects: list[Effect] = field(default_factory=list)
    # Blacklistings through links end no later than this (`advance`).
    linked_upto: datetime | None = None

    def policy(self, shop_id: str) -> UnpaidPolicy:
        return self.policies.for_shop(shop_id)


# ---------------------------------------------------------------------------
# Events


# msgpack: smaller than JSON, so quicker to write and checksum (times as instants).
_DIGEST_ENCODER = msgspec.msgpack.Encoder()


def event_digest(event: CustomerEvent) -> int:
    """A digest of everything the event says (its decoded fields, not its bytes: the same
    event serialized another way, or its times written in another offset, has the same
    digest). A record type that gains a field changes its events' digests: an event sent
    again across that upgrade, within the dedupe window, is then dead-lettered as reused
    (it was applied: nothing is lost)."""
    return zlib.crc32(_DIGEST_ENCODER.encode(event))


def reused_id(state: UnpaidState, event: CustomerEvent, digest: int) -> str | None:
    """Why `event` is refused when its event_id was seen (within the dedupe window) on an
    event with another digest; None for a new event or the same one again (a duplicate)."""
    known = state.digests.get(event.event_id)
    if known is None or known == digest or event.event_id not in state.seen:
        return None
    return (
        f"event_id {event.event_id!r} was used by another event of this customer "
        f"(at {state.seen[event.event_id].isoformat()}) with other content; an event sent "
        "again must say the same, a new event needs its own event_id"
    )


def handle(
    state: UnpaidState, event: CustomerEvent, policies: Policies, digest: int | None = None
) -> tuple[UnpaidState, list[Effect]]:
    """Apply one event at its own event time; one whose event_id was seen changes nothing.

    Timers due before it must already have fired, and the state must be
    pruned up to the stream clock (`advance` and `prune` do both). `digest`
    (`event_digest`) is kept with the event_id, for `reused_id`.
    """
    run = _Run(event.customer_id, policies)
    if event.event_id in state.seen:
        return state, []
    state.seen[event.event_id] = event.occurred_at
    if digest is not None:
        state.digests[event.event_id] = digest
    if type(event) is CheckoutConfirmed:
        _on_checkout(state, event, run)
    elif type(event) is PaymentAttempted:
        if event.status == "succeeded":
            _on_payment(
                state,
                event.order_id,
                event.event_id,
                event.occurred_at,
                event.amount.amount_minor,
                event.amount.currency,
                run,
            )
    elif type(event) is OrderStatusChanged:
        _on_status(state, event, run)
    elif type(event) is AdminActionRequested:
        _on_admin(state, event, run)
    return state, run.effects


def _on_checkout(state: UnpaidState, event: CheckoutConfirmed, run: _Run) -> None:
    oid = event.order_id
    if oid in state.open or oid in state.expired or oid in state.closed:
        return  # a re-sent checkout under a new event id changes nothing
    policy = run.policy(event.shop_id)
    at = event.occurred_at
    window = policy.window_for(event.payment_method)
    deadline = event.payment_due_at or (at + window if window is not None else None)
    order = OpenOrder(
        order_id=oid,
        shop_id=event.shop_id,
        checkout_at=at,
        deadline=deadline,
        total_minor=event.total.amount_minor,
        currency=event.total.currency,
        method=event.payment_method,
        time_zone=event.customer_time_zone,
    )
    if deadline is not None:
        order.steps = plan_reminders(at, deadline, policy, event.payment_method, order.time_zone)
    state.open[oid] = order
    for held in state.held.pop(oid, []):
        _on_payment(state, oid, held.event_id, held.at, held.amount_minor, held.currency, run)


def _on_payment(
    state: UnpaidState,
    order_id: str,
    event_id: str,
    at: datetime,
    amount_minor: int | None,
    currency: str | None,
    run: _Run,
) -> None:
    order = state.open.get(order_id)
    if order is not None:
        if amount_minor is None:
            order.paid_minor = order.total_minor
        elif currency == order.currency:
            order.paid_minor += amount_minor
        if order.paid_minor >= order.total_minor:
            _close(state, order, "paid", at, run)
            run.effects.append(
                RecordPurchase(
                    run.customer_id, order.shop_id, order_id, at, order.total_minor, order.currency
                )
            )
            if order.reminders_sent:
                run.effects.append(
                    ReportRecovery(
                        customer_id=run.customer_id,
                        shop_id=order.shop_id,
                        order_id=order_id,
                        paid_at=at,
                        reminders_sent=order.reminders_sent,
                        amount_minor=order.total_minor,
                        currency=order.currency,
                    )
                )
        return
    expired = state.expired.get(order_id)
    if expired is not None:
        if at > expired.grace_until:
            return  # too late to count; the strike stands
        if amount_minor is None:
            expired.paid_minor = expired.total_minor
        elif currency == expired.currency:
            expired.paid_minor += amount_minor
        if expired.paid_minor >= expired.total_minor:
            del state.expired[order_id]
            state.closed[order_id] = at
            _reverse_strike(state, order_id, at, run)
            run.effects.append(
                RecordPurchase(
                    run.customer_id,
                    expired.shop_id,
                    order_id,
                    at,
                    expired.total_minor,
                    expired.currency,
                )
            )
        return
    if order_id in state.closed:
        return
    policy = run.policies.default
    state.held.setdefault(order_id, []).append(
        HeldPayment(event_id, at, at + policy.payment_hold, amount_minor, currency)
    )


def _on_status(state: UnpaidState, event: OrderStatusChanged, run: _Run) -> None:
    oid, at = event.order_id, event.occurred_at
    if event.status in ("paid", "completed"):
        _on_payment(state, oid, event.event_id, at, None, None, run)
    elif event.status == "cancelled":
        order = state.open.get(oid)
        if order is not None:
            _close(state, order, "cancelled", at, run)
            if (
                event.cancelled_by == "buyer"
                and run.policy(order.shop_id).buyer_cancellation_strikes
            ):
                _add_strike(state, oid, order.shop_id, at, "buyer_cancelled", run, order)
        elif oid in state.expired:
            _cancel_expired(state, state.expired[oid], event, run)
        else:
            state.closed.setdefault(oid, at)
    elif event.status == "cod_refused":
        if any(s.order_id == oid for s in state.strikes):
            return
        order = state.open.get(oid)
        if order is not None:
            _close(state, order, "refused", at, run)
        else:
            state.closed.setdefault(oid, at)
        _add_strike(state, oid, event.shop_id, at, "cod_refused", run, order)


def _cancel_expired(
    state: UnpaidState, expired: ExpiredOrder, event: OrderStatusChanged, run: _Run
) -> None:
    """A cancellation read after its order expired. Cancelled before the deadline (its
    record was only slower to arrive than the deadline), the order never went unpaid: the
    strike goes, as it would have never come had the records been read in time order.
    Cancelled after it (a shop tidying up an expired order), the strike stands."""
    at = event.occurred_at
    if at >= expired.expired_at:
        return
    del state.expired[expired.order_id]
    state.closed[expired.order_id] = at
    _reverse_strike(state, expired.order_id, at, run, "a cancellation before its deadline")
    if event.cancelled_by == "buyer" and run.policy(expired.shop_id).buyer_cancellation_strikes:
        _add_strike(state, expired.order_id, expired.shop_id, at, "buyer_cancelled", run)


def _on_admin(state: UnpaidState, event: AdminActionRequested, run: _Run) -> None:
    policy = run.policy(event.shop_id)
    scope = "*" if event.scope == "platform" else event.shop_id
    at = event.occurred_at
    if event.action == "blacklist":
        if on_own_list(state, scope):
            return
        until = at + (event.duration or policy.blacklist_duration)
        listing = Listing(
            scope, at, until, _next_offence(state, scope, at, policy), True, event.actor
        )
        run.effects += _list_own(state, run.customer_id, listing)
        state.offences[scope] = Offences(listing.offence)
        run.effects.append(
            Blacklist(
                customer_id=run.customer_id,
                scope=scope,
                since=at,
                until=until,
                offence=listing.offence,
                evidence=(),
                actor=event.actor,
                reason=event.reason,
                note=event.note,
            )
        )
    elif event.action == "unblacklist":
        if scope not in state.listings:
            return
        listing = state.listings.pop(scope)
        run.effects.append(
            Unblacklist(
                customer_id=run.customer_id,
                scope=scope,
                at=at,
                cause="manual",
                actor=event.actor,
                reason=event.reason,
                note=event.note,
                linked_to=listing.linked_to,
                ended=ended_listing(listing),
            )
        )
        run.effects += _listing_ended(state, run.customer_id, listing, at, lifted=True)


# ---------------------------------------------------------------------------
# Strikes and the blacklist


def _close(state: UnpaidState, order: OpenOrder, outcome: str, at: datetime, run: _Run) -> None:
    del state.open[order.order_id]
    state.closed[order.order_id] = at
    run.effects.append(CloseOrder(run.customer_id, order.shop_id, order.order_id, outcome, at))


def strike_count(state: UnpaidState, scope: str, at: datetime, window: timedelta) -> int:
    """Unreversed strikes of `scope` inside the rolling window ending at `at`."""
    return sum(
        1 for s in state.strikes if s.scope == scope and not s.reversed and at - window < s.at <= at
    )


def _add_strike(
    state: UnpaidState,
    order_id: str,
    shop_id: str,
    at: datetime,
    reason: str,
    run: _Run,
    order: OpenOrder | None = None,
) -> None:
    policy = run.policy(shop_id)
    scope = policy.scope_of(shop_id)
    state.strikes.append(Strike(order_id, shop_id, scope, at, reason))
    run.effects.append(
        RecordStrike(
            customer_id=run.customer_id,
            shop_id=shop_id,
            order_id=order_id,
            reason=reason,
            at=at,
            scope=scope,
            strike_count=strike_count(state, scope, at, policy.strike_window),
            threshold=policy.strike_threshold,
            window=policy.strike_window,
            order=None if order is None else _evidence(order),
        )
    )
    _maybe_blacklist(state, scope, at, policy, run)


def _evidence(order: OpenOrder) -> OrderEvidence:
    return OrderEvidence(
        checkout_at=order.checkout_at,
        deadline=order.deadline,
        method=order.method,
        total_minor=order.total_minor,
        paid_minor=order.paid_minor,
        currency=order.currency,
        reminders_sent=order.reminders_sent,
    )


def _next_offence(state: UnpaidState, scope: str, at: datetime, policy: UnpaidPolicy) -> int:
    past = state.offences.get(scope)
    if past is None:
        return 1
    if past.last_end is not None and at - past.last_end >= policy.repeat_offender_memory:
        return 1
    return past.count + 1


def _maybe_blacklist(
    state: UnpaidState, scope: str, at: datetime, policy: UnpaidPolicy, run: _Run
) -> None:
    # A listing this customer's own strikes earn replaces one through a linked account.
    if on_own_list(state, scope):
        return
    live = [
        s
        for s in state.strikes
        if s.scope == scope
        and not s.reversed
        and not s.consumed
        and at - policy.strike_window < s.at <= at
    ]
    if len(live) < policy.strike_threshold:
        return
    run.effects += enlist(state, run.customer_id, scope, at, live, [], policy)


def enlist(
    state: UnpaidState,
    customer_id: str,
    scope: str,
    at: datetime,
    own: list[Strike],
    linked: list[tuple[str, EvidenceLine]],
    policy: UnpaidPolicy,
) -> list[Effect]:
    """List the customer on `scope` at `at` for its `own` strikes (and `linked`: strikes
    of linked accounts, account and strike, policy `linked_strikes: shared`), as its next
    offence; nothing when it is on that list by its own already."""
    if on_own_list(state, scope):
        return []
    offence = _next_offence(state, scope, at, policy)
    until = at + policy.blacklist_duration * (2 ** (offence - 1))
    for s in own:
        s.consumed = True
    listing = Listing(
        scope,
        at,
        until,
        offence,
        False,
        "hitrun",
        [s.order_id for s in own],
        linked_evidence=[(other, line.order_id) for other, line in linked],
    )
    ended = _list_own(state, customer_id, listing)
    # The previous offence's end stays until this one ends: undone (a reversed
    # strike), the record is as before, and ages out from that end.
    previous = state.offences.get(scope)
    state.offences[scope] = Offences(offence, previous.last_end if previous else None)
    lines = [EvidenceLine(s.order_id, s.shop_id, s.reason, s.at) for s in own]
    reason = f"{len(lines)} strikes within {policy.strike_window.days} days"
    accounts = sorted({other for other, _ in linked})
    if linked:
        lines += [
            msgspec.structs.replace(line, reason=f"{line.reason} (linked account {other})")
            for other, line in linked
        ]
        lines.sort(key=lambda line: (line.at, line.order_id))
        reason = (
            f"{len(lines)} strikes within {policy.strike_window.days} days, with linked "
            f"account{'s' if len(accounts) > 1 else ''} {', '.join(accounts)} "
            "(policy linked_strikes: shared)"
        )
    blacklisted = Blacklist(
        customer_id=customer_id,
        scope=scope,
        since=at,
        until=until,
        offence=offence,
        evidence=tuple(lines),
        actor="hitrun",
        reason=reason,
        linked_accounts=tuple(accounts),
    )
    return [*ended, blacklisted]


def on_own_list(state: UnpaidState, scope: str) -> bool:
    listing = state.listings.get(scope)
    return listing is not None and listing.linked_to is None


def _list_own(state: UnpaidState, customer_id: str, listing: Listing) -> list[Effect]:
    """Put the customer on a list by its own; a listing through a link it replaces waits
    for this one to end, or, had it ended before this one began (its end waited for the
    link reports: `advance`), ends then."""
    replaced = state.listings.get(listing.scope)
    ended: list[Effect] = []
    if replaced is not None and replaced.linked_to is not None:
        if replaced.until <= listing.since:
            ended.append(_expired(customer_id, replaced))
        else:
            state.waiting[listing.scope] = replaced
    state.listings[listing.scope] = listing
    return ended


def ended_listing(listing: Listing) -> EndedListing:
    """What an unblacklisting says of the blacklisting it ends (customer_unblacklisted.v2)."""
    linked = sorted({account for account, _ in listing.linked_evidence})
    return EndedListing(
        since=listing.since,
        until=listing.until,
        offence=listing.offence,
        orders=tuple(listing.evidence),
        linked_accounts=(listing.linked_to,) if listing.linked_to is not None else tuple(linked),
        linked_orders=tuple(order for _, order in listing.linked_evidence),
    )


def _listing_ended(
    state: UnpaidState,
    customer_id: str,
    listing: Listing,
    at: datetime,
    lifted: bool = False,
    undone: bool = False,
) -> list[Effect]:
    """A listing ended at `at` (an operator `lifted` it; `undone`: a reversed strike took
    its offence back). When it was the customer's own, its offence's end is remembered
    (a linked account's is no offence), and so is the listing, and a listing through a
    link that waited for it resumes."""
    if listing.linked_to is not None:
        return []
    if not undone:
        state.offences.setdefault(listing.scope, Offences(listing.offence)).last_end = at
    state.ended[listing.scope] = OwnEnded(listing.since, at, lifted)
    return _resume(state, customer_id, listing.scope, at, lifted)


def _resume(
    state: UnpaidState, customer_id: str, scope: str, at: datetime, lifted: bool
) -> list[Effect]:
    waited = state.waiting.pop(scope, None)
    if waited is None or lifted or waited.until <= at:
        return []
    return _enter(state, customer_id, msgspec.structs.replace(waited, since=at))


def _enter(state: UnpaidState, customer_id: str, listing: Listing) -> list[Effect]:
    state.listings[listing.scope] = listing
    return [_linked_blacklist(customer_id, listing)]


def _linked_blacklist(customer_id: str, listing: Listing) -> Blacklist:
    assert listing.linked_to is not None
    return Blacklist(
        customer_id,
        listing.scope,
        listing.since,
        listing.until,
        1,
        (),
        "hitrun",
        listing.reason or f"linked to account {listing.linked_to}",
        linked_to=listing.linked_to,
        linked_accounts=(listing.linked_to,),
    )


def _expired(customer_id: str, listing: Listing) -> Unblacklist:
    reason = "blacklisting period ended"
    if listing.linked_to is not None:
        reason = f"the blacklisting of linked account {listing.linked_to} or the link ended"
    return Unblacklist(
        customer_id=customer_id,
        scope=listing.scope,
        at=listing.until,
        cause="expired",
        actor="hitrun",
        reason=reason,
        linked_to=listing.linked_to,
        ended=ended_listing(listing),
    )


def extend_listing(
    state: UnpaidState,
    customer_id: str,
    other: str,
    scope: str,
    since: datetime,
    until: datetime,
    reason: str,
) -> list[Effect]:
    """Put the customer on blacklist `scope` from `since` to `until`, for as long as linked
    account `other` is on it (policy `linked_accounts: blacklist`); nothing when it already
    is on it through a link, or the span is empty.

    Never over a blacklisting of the customer's own: from the time that begins, this one
    waits for it to end, and resumes then for what is left, unless an operator lifted it.
    Heard of only after the customer's own one ended (the report was on its way while
    the customer's clock went on), it is decided as it would have been had it been
    heard of in time, by the last such listing: the same alerts either way."""
    current = state.listings.get(scope)
    if until <= since or scope in state.waiting:
        return []
    if current is not None and current.linked_to is not None:
        return []
    listing = Listing(scope, since, until, 1, False, "hitrun", [], other, reason=reason)
    if current is not None:
        return _beside_own(state, customer_id, listing, current.since)
    last = state.ended.get(scope)
    if last is None or since >= last.end:
        return _enter(state, customer_id, listing)
    effects = _beside_own(state, customer_id, listing, last.since)
    return effects + _resume(state, customer_id, scope, last.end, last.lifted)


def _beside_own(
    state: UnpaidState, customer_id: str, listing: Listing, own_since: datetime
) -> list[Effect]:
    """A listing through a link beside the customer's own one, which began at
    `own_since`: it waits, after running alone until then if it began before."""
    if listing.since >= own_since:
        state.waiting[listing.scope] = listing
        return []
    effects: list[Effect] = [_linked_blacklist(customer_id, listing)]
    if listing.until <= own_since:
        effects.append(_expired(customer_id, listing))
    else:
        state.waiting[listing.scope] = listing
    return effects


def live_strikes(state: UnpaidState, scope: str) -> list[Strike]:
    """The customer's strikes of `scope` that stand and led to no blacklisting yet."""
    return [s for s in state.strikes if s.scope == scope and not s.reversed and not s.consumed]


def own_listings(state: UnpaidState) -> list[tuple[str, datetime, datetime]]:
    """The blacklistings the customer earned (scope, since, until): the ones the identity
    stage passes on to linked accounts; one through a link travels no further."""
    return [
        (listing.scope, listing.since, listing.until)
        for listing in state.listings.values()
        if listing.linked_to is None
    ]


def end_linked(state: UnpaidState, other: str, scope: str | None, at: datetime) -> None:
    """Listings through linked account `other` (of `scope`, or all) end by `at`; their
    ends fire as timers (`advance`), at `at` or at their own end if sooner."""
    for listing in [*state.listings.values(), *state.waiting.values()]:
        if listing.linked_to == other and scope in (None, listing.scope):
            listing.until = max(listing.since, min(listing.until, at))


def _reverse_strike(
    state: UnpaidState, order_id: str, at: datetime, run: _Run, why: str = "a late payment"
) -> None:
    strike = next((s for s in state.strikes if s.order_id == order_id and not s.reversed), None)
    if strike is None:
        return
    strike.reversed = True
    policy = run.policy(strike.shop_id)
    run.effects.append(
        ReverseStrike(
            customer_id=run.customer_id,
            shop_id=strike.shop_id,
            order_id=order_id,
            at=at,
            scope=strike.scope,
            strike_count=strike_count(state, strike.scope, at, policy.strike_window),
        )
    )
    listing = state.listings.get(strike.scope)
    if listing is None or listing.manual or order_id not in listing.evidence:
        return
    reason = f"strike for order {order_id} reversed by {why}"
    # Linked accounts' strikes it counted stand, as far as this customer knows.
    linked = len(listing.linked_evidence)
    run.effects += recheck_listing(state, run.customer_id, listing, linked, at, reason, policy)


def recheck_listing(
    state: UnpaidState,
    customer_id: str,
    listing: Listing,
    linked_standing: int,
    at: datetime,
    reason: str,
    policy: UnpaidPolicy,
) -> list[Effect]:
    """Undo a blacklisting that no longer rests on enough strikes (its own that still
    stand, and `linked_standing` of linked accounts'), after a reversal."""
    standing = [
        s
        for s in state.strikes
        if s.order_id in listing.evidence and s.scope == listing.scope and not s.reversed
    ]
    if len(standing) + linked_standing >= policy.strike_threshold:
        return []
    del state.listings[listing.scope]
    for s in standing:
        s.consumed = False
    offences = state.offences[listing.scope]
    offences.count -= 1
    if offences.count <= 0:
        del state.offences[listing.scope]
    undone = [
        Unblacklist(
            customer_id=customer_id,
            scope=listing.scope,
            at=at,
            cause="strike_reversed",
            actor="hitrun",
            reason=reason,
            linked_to=listing.linked_to,
            ended=ended_listing(listing),
            standing=len(standing) + linked_standing,
            threshold=policy.strike_threshold,
        )
    ]
    return undone + _listing_ended(state, customer_id, listing, at, undone=True)


# ---------------------------------------------------------------------------
# Timers


def plan_reminders(
    checkout_at: datetime,
    deadline: datetime,
    policy: UnpaidPolicy,
    method: str,
    time_zone: str | None,
) -> list[datetime]:
    """Reminder times inside the payment window, moved out of quiet hours; others dropped."""
    schedule = policy.schedule_for(method)
    wanted = [checkout_at + a for a in schedule.after_checkout]
    wanted += [deadline - b for b in schedule.before_deadline]
    steps = []
    for t in wanted:
        moved = after_quiet_hours(t, policy, time_zone)
        if checkout_at < moved < deadline:
            steps.append(moved)
    steps.sort()
    # Each instant once (the first of equal ones), as a set would keep it; sorting and
    # comparing neighbours is cheaper than hashing aware datetimes.
    return [at for i, at in enumerate(steps) if i == 0 or at != steps[i - 1]]


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def after_quiet_hours(t: datetime, policy: UnpaidPolicy, time_zone: str | None) -> datetime:
    """`t`, or the end of the customer's quiet hours if `t` falls inside them."""
    if time_zone is None or policy.quiet_start is None or policy.quiet_end is None:
        return t
    zone = _zone(time_zone)
    if zone is None:
        return t
    local = t.astimezone(zone)
    clock = local.time()  # naive: time() leaves the zone out
    start, end = policy.quiet_start, policy.quiet_end
    inside = (start <= clock or clock < end) if start > end else (start <= clock < end)
    if not inside:
        return t
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    wake = datetime.combine(day, end, tzinfo=zone)
    return wake.astimezone(t.tzinfo)


def _next_step(
    order: OpenOrder, last: datetime | None, policy: UnpaidPolicy
) -> tuple[int, datetime] | None:
    """Index and time of the order's next feasible reminder, given the cooldown; None if none."""
    if order.deadline is None:
        return None
    for index, step in enumerate(order.steps):
        at = step
        if last is not None and at < last + policy.reminder_cooldown:
            at = after_quiet_hours(last + policy.reminder_cooldown, policy, order.time_zone)
        if at < order.deadline:
            return index, at
    return None


def _reminder_time(
    order: OpenOrder, last: datetime | None, policy: UnpaidPolicy
) -> datetime | None:
    """When the order's next reminder can go out, given the cooldown; None if none can."""
    step = _next_step(order, last, policy)
    return None if step is None else step[1]


def _order_times(order: OpenOrder, last: datetime | None, policy: UnpaidPolicy) -> list[datetime]:
    """The order's next reminder, if one can go out, and its deadline (cash on delivery:
    the longest it may stay open). A list, not a generator: asked after every change."""
    end = order.deadline if order.deadline is not None else order.checkout_at + policy.cod_max_open
    step = _next_step(order, last, policy)
    return [end] if step is None else [step[1], end]


def next_due(state: UnpaidState, policies: Policies) -> datetime | None:
    """The earliest moment at which `advance` has something to do (a timer or a clean-up)."""
    timer = next_timer(state, policies)
    cleanup = next_cleanup(state, policies)
    if timer is None or (cleanup is not None and cleanup < timer):
        return cleanup
    return timer


def next_timer(
    state: UnpaidState,
    policies: Policies,
    linked_upto: datetime | None = None,
    after: datetime | None = None,
) -> datetime | None:
    """The earliest reminder, expiry, end of a listing or of a payment hold: what has effects.

    Ends of listings through links after `linked_upto` are left out (`advance`), and
    with `after`, every time up to it."""
    # Called after every change of every customer: empty parts are skipped
    # without building anything (most customers have only a few parts).
    times: list[datetime] = []
    for order in state.open.values():
        times += _order_times(order, state.last_reminder_at, policies.for_shop(order.shop_id))
    if state.listings:
        if linked_upto is None:
            times.extend(listing.until for listing in state.listings.values())
        else:
            times.extend(
                listing.until
                for listing in state.listings.values()
                if listing.linked_to is None or listing.until <= linked_upto
            )
    if state.held:
        times.extend(h.hold_until for holds in state.held.values() for h in holds)
    if after is not None:
        times = [t for t in times if t > after]
    return min(times) if times else None  # min(..., default=None) parses keywords: slower


def next_cleanup(state: UnpaidState, policies: Policies) -> datetime | None:
    """The earliest moment at which `prune` forgets something; forgetting has no effects.

    What is forgotten here no longer decides anything at any later moment
    (each rule that reads it also checks its age), except the dedupe window's
    memory of event and order ids: `handle` must therefore see a state pruned
    up to the stream clock, and so a caller may prune lazily, whenever it next
    touches the state, instead of at this moment.
    """
    times: list[datetime] = []
    if state.expired:
        times.extend(e.grace_until for e in state.expired.values())
    default = policies.default
    if state.strikes:
        times.append(min(s.at for s in state.strikes) + default.strike_window)
    if state.offences:
        times.extend(
            o.last_end + default.repeat_offender_memory
            for o in state.offences.values()
            if o.last_end is not None
        )
    if state.waiting:
        times.append(min(w.until for w in state.waiting.values()))
    if state.ended:
        times.extend(e.end + default.repeat_offender_memory for e in state.ended.values())
    if state.closed:
        times.append(min(state.closed.values()) + default.dedupe_window)
    if state.seen:
        times.append(min(state.seen.values()) + default.dedupe_window)
    if state.last_reminder_at is not None:
        times.append(state.last_reminder_at + default.reminder_cooldown)
    return min(times) if times else None  # min(..., default=None) parses keywords: slower


def advance(
    state: UnpaidState,
    customer_id: str,
    now: datetime,
    policies: Policies,
    linked_upto: datetime | None = None,
) -> tuple[UnpaidState, list[Effect]]:
    """Fire, in time order, every reminder, expiry and blacklisting end due by `now`; then prune.

    A blacklisting through a link ends no later than `linked_upto`: a link report of an
    earlier time, still on its way, may end it sooner (the link taken back, the linked
    account's blacklisting cut short), and its end waits for it."""
    run = _Run(customer_id, policies, linked_upto=linked_upto)
    while True:
        due = next_timer(state, policies, linked_upto)
        if due is None or due > now:
            break
        _fire(state, due, run)
    prune(state, now, policies)
    return state, run.effects


def _fire(state: UnpaidState, at: datetime, run: _Run) -> None:
    # Reminders first: at equal times a reminder precedes an expiry (a reminder
    # is never planned at the deadline itself, so this only orders other orders).
    _fire_reminders(state, at, run)
    for order in sorted(state.open.values(), key=lambda o: o.order_id):
        policy = run.policy(order.shop_id)
        if order.deadline is not None and order.deadline <= at:
            _expire(state, order, run)
        elif order.deadline is None and order.checkout_at + policy.cod_max_open <= at:
            _close(state, order, "abandoned", at, run)
    for scope in sorted(state.listings):
        listing = state.listings[scope]
        if listing.until <= at and (
            listing.linked_to is None or run.linked_upto is None or listing.until <= run.linked_upto
        ):
            del state.listings[scope]
            run.effects.append(_expired(run.customer_id, listing))
            run.effects += _listing_ended(state, run.customer_id, listing, listing.until)
    for order_id in sorted(state.held):
        holds = state.held[order_id]
        for held in [h for h in holds if h.hold_until <= at]:
            holds.remove(held)
            run.effects.append(DropUnmatchedPayment(run.customer_id, order_id, held.event_id))
        if not holds:
            del state.held[order_id]


def _fire_reminders(state: UnpaidState, at: datetime, run: _Run) -> None:
    last = state.last_reminder_at
    due = [
        o
        for o in state.open.values()
        if (t := _reminder_time(o, last, run.policy(o.shop_id))) is not None and t <= at
    ]
    if not due:
        return
    lead = min(due, key=lambda o: (o.deadline, o.order_id))
    cooldown = run.policy(lead.shop_id).reminder_cooldown
    # Orders whose next reminder would fall inside the coming cooldown share this one.
    batch: list[OpenOrder] = []
    for order in sorted(state.open.values(), key=lambda o: (o.deadline or at, o.order_id)):
        step = _next_step(order, last, run.policy(order.shop_id))
        if step is not None and step[1] < at + cooldown:
            # This reminder stands for the order's next step; later steps remain,
            # postponed past the cooldown if they fall inside it.
            del order.steps[: step[0] + 1]
            order.reminders_sent += 1
            batch.append(order)
    state.last_reminder_at = at
    run.effects.append(
        SendReminder(
            customer_id=run.customer_id,
            shop_id=lead.shop_id,
            order_id=lead.order_id,
            attempt=lead.reminders_sent,
            at=at,
            orders=tuple(
                ReminderLine(
                    o.order_id, o.shop_id, o.total_minor - o.paid_minor, o.currency, o.deadline
                )
                for o in batch
                if o.deadline is not None
            ),
            time_zone=lead.time_zone,
        )
    )


def _expire(state: UnpaidState, order: OpenOrder, run: _Run) -> None:
    assert order.deadline is not None
    policy = run.policy(order.shop_id)
    at = order.deadline
    _close(state, order, "expired", at, run)
    del state.closed[order.order_id]
    state.expired[order.order_id] = ExpiredOrder(
        order.order_id,
        order.shop_id,
        at,
        at + policy.late_payment_grace,
        order.total_minor,
        order.currency,
        order.paid_minor,
    )
    _add_strike(state, order.order_id, order.shop_id, at, "unpaid", run, order)


def prune(state: UnpaidState, now: datetime, policies: Policies) -> None:
    """Forget what is older than its window at `now` (see `next_cleanup`); idempotent."""
    cleanup = next_cleanup(state, policies)
    if cleanup is None or cleanup > now:
        return
    default = policies.default
    # Each part only when it holds anything: a comprehension is a call of its own.
    if state.expired:
        for oid in [oid for oid, e in state.expired.items() if e.grace_until <= now]:
            state.closed[oid] = state.expired.pop(oid).expired_at
    if state.strikes:
        state.strikes = [s for s in state.strikes if s.at + default.strike_window > now]
    if state.offences:
        for scope in [
            s
            for s, o in state.offences.items()
            if o.last_end is not None and s not in state.listings
        ]:
            last_end = state.offences[scope].last_end
            if last_end is not None and last_end + default.repeat_offender_memory <= now:
                del state.offences[scope]
    if state.waiting:
        state.waiting = {k: w for k, w in state.waiting.items() if w.until > now}
    if state.ended:
        memory = default.repeat_offender_memory
        state.ended = {k: e for k, e in state.ended.items() if e.end + memory > now}
    horizon = now - default.dedupe_window
    if state.closed:
        state.closed = {k: v for k, v in state.closed.items() if v > horizon}
    if state.seen:
        seen = {k: v for k, v in state.seen.items() if v > horizon}
        if state.digests and len(seen) < len(state.seen):
            state.digests = {k: v for k, v in state.digests.items() if k in seen}
        state.seen = seen
    if (
        state.last_reminder_at is not None
        and state.last_reminder_at + default.reminder_cooldown <= now
        and not _postponed(state, state.last_reminder_at, policies)
    ):
        state.last_reminder_at = None


def _postponed(state: UnpaidState, last: datetime, policies: Policies) -> bool:
    """Does the cooldown after the reminder at `last` still hold back an order's reminder?

    A reminder step that fell inside the cooldown waits for its end, moved out
    of quiet hours (`_next_step`), and stays in the order's steps until sent:
    forgetting `last` would bring it back to its own time, already past, and
    send it at once, quiet hours or not.
    """
    return any(
        step < last + policies.for_shop(order.shop_id).reminder_cooldown
        for order in state.open.values()
        if order.deadline is not None
        for step in order.steps
    )


def describe(state: UnpaidState, policies: Policies) -> dict[str, object]:
    """The customer's unpaid-detector state for support staff (GET /customers/{id})."""

    def ts(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    return {
        "open_orders": [
            {
                "order_id": o.order_id,
                "shop_id": o.shop_id,
                "checkout_at": ts(o.checkout_at),
                "deadline": ts(o.deadline),
                "amount_due_minor": o.total_minor - o.paid_minor,
                "currency": o.currency,
                "payment_method": o.method,
                "reminders_sent": o.reminders_sent,
                "next_reminder_at": ts(
                    _reminder_time(o, state.last_reminder_at, policies.for_shop(o.shop_id))
                ),
            }
            for o in sorted(state.open.values(), key=lambda o: o.checkout_at)
        ],
        "strikes": [
            {
                "order_id": s.order_id,
                "shop_id": s.shop_id,
                "scope": s.scope,
                "at": ts(s.at),
                "reason": s.reason,
                "reversed": s.reversed,
            }
            for s in state.strikes
        ],
        "blacklist": [
            {
                "scope": listing.scope,
                "since": ts(listing.since),
                "until": ts(listing.until),
                "offence": listing.offence,
                "actor": listing.actor,
                "evidence": listing.evidence,
                "linked_to": listing.linked_to,
            }
            for listing in sorted(state.listings.values(), key=lambda x: x.scope)
        ],
        "next_due": ts(next_due(state, policies)),
    }
