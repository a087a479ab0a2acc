"""Why a customer stands where they stand: hitrun's decisions about them, in time order.

Support staff answer "why was I blocked?" with it (`GET /customers/{id}/why`,
`hitrun why CUSTOMER`): each strike with its order and reason, each
blacklisting with the strikes it rests on and who decided it, the orders
still open with their deadlines, and the policy values that applied. It
reads the customer's state and the policies only; the alerts on the output
topics are the full record (a strike older than the strike window, and a
blacklisting that ended, are no longer in the state).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hitrun.agents.identity import IdentityState, Link, LinkPolicy
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.unpaid import (
    Listing,
    OpenOrder,
    Strike,
    UnpaidState,
    strike_count,
)

# What each strike reason means, for a person.
REASONS = {
    "unpaid": "was not paid by its payment deadline",
    "cod_refused": "was a cash-on-delivery parcel refused at the door",
    "buyer_cancelled": "was cancelled by the buyer after checkout",
}

_RANK = {
    "blacklisting_ended": 0,
    "order_open": 1,
    "strike": 2,
    "strike_reversed": 2,
    "blacklisted": 3,
    "linked": 4,
}


def explain(
    customer_id: str,
    state: UnpaidState,
    policies: Policies,
    links: IdentityState | None = None,
    link_policy: LinkPolicy | None = None,
) -> dict[str, Any]:
    """The customer's decision trail: `decisions` in time order, each with a `text` for a
    person, and the `policies` of the shops they concern (and the link policy, with links)."""
    linked = [] if links is None else sorted(links.links.items())
    decisions = [
        *(_link(other, link) for other, link in linked if link.strong_since is not None),
        *(_open_order(order) for order in state.open.values()),
        *(_strike(strike, state, policies) for strike in state.strikes),
        *(_listing(listing, policies, state) for listing in state.listings.values()),
        *(
            _ended(scope, offences.count, offences.last_end)
            for scope, offences in state.offences.items()
            if offences.last_end is not None and scope not in state.listings
        ),
    ]
    # At one instant, the cause before what it caused: a strike before the blacklisting.
    decisions.sort(key=lambda d: (d["at"], _RANK[d["decision"]], d.get("order_id", "")))
    shops = (
        {order.shop_id for order in state.open.values()}
        | {strike.shop_id for strike in state.strikes}
        | {scope for scope in state.listings if scope != "*"}
    )
    trail = {
        "customer_id": customer_id,
        "blacklisted_on": sorted(state.listings),
        "decisions": decisions,
        "policies": {shop: _policy(policies.for_shop(shop)) for shop in sorted(shops)},
    }
    if link_policy is not None and any(d["decision"] == "linked" for d in decisions):
        trail["link_policy"] = {
            "strong_kinds": sorted(link_policy.strong_kinds),
            "min_kinds": link_policy.min_kinds,
            "common_after": link_policy.common_after,
            "window": _duration(link_policy.window),
        }
    return trail


def _link(other: str, link: Link) -> dict[str, Any]:
    shared = [
        {"kind": kind, "hash_prefix": prefix, "seen_at": _ts(at)}
        for (kind, prefix), at in sorted(
            (tuple(key.split(":", 1)), at) for key, at in link.evidence.items()
        )
    ]
    listed = ", ".join(
        f"{_scope(scope)} from {_ts(since)} until {_ts(until)}"
        for scope, since, until in link.listed
    )
    standing = f"; {other} is on {listed}" if listed else ""
    return {
        "at": _ts(link.strong_since or min(link.evidence.values())),
        "decision": "linked",
        "linked_customer_id": other,
        "identifiers": shared,
        "linked_blacklists": [scope for scope, _, _ in link.listed],
        "text": (
            f"linked to account {other}: both used the same "
            + ", ".join(f"{s['kind']} ({s['hash_prefix']}…)" for s in shared)
            + standing
        ),
    }


def _open_order(order: OpenOrder) -> dict[str, Any]:
    due = order.total_minor - order.paid_minor
    if order.deadline is None:
        deadline = "no payment deadline (paid at the door)"
    else:
        window = _duration(order.deadline - order.checkout_at)
        deadline = f"payment deadline {_ts(order.deadline)} ({window} for {order.method})"
    return {
        "at": _ts(order.checkout_at),
        "decision": "order_open",
        "shop_id": order.shop_id,
        "order_id": order.order_id,
        "deadline": None if order.deadline is None else _ts(order.deadline),
        "reminders_sent": order.reminders_sent,
        "text": (
            f"order {order.order_id} at {order.shop_id}: {due} {order.currency} "
            f"(minor units) due, {deadline}; {order.reminders_sent} reminder(s) sent"
        ),
    }


def _strike(strike: Strike, state: UnpaidState, policies: Policies) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "at": _ts(strike.at),
        "decision": "strike_reversed" if strike.reversed else "strike",
        "shop_id": strike.shop_id,
        "order_id": strike.order_id,
        "scope": strike.scope,
        "reason": strike.reason,
    }
    if strike.reversed:
        entry["text"] = (
            f"strike for order {strike.order_id} at {strike.shop_id} reversed: it was paid "
            "in full within the late-payment grace, or a cancellation from before its "
            "deadline was read after it; it counts for nothing"
        )
        return entry
    policy = policies.for_shop(strike.shop_id)
    meaning = REASONS.get(strike.reason, f"(reason {strike.reason})")
    entry["count"] = count = strike_count(state, strike.scope, strike.at, policy.strike_window)
    entry["text"] = (
        f"strike {count} of {policy.strike_threshold} on {_scope(strike.scope)}: order "
        f"{strike.order_id} at {strike.shop_id} {meaning}"
    )
    return entry


def _listing(listing: Listing, policies: Policies, state: UnpaidState) -> dict[str, Any]:
    # The platform's list follows the default policy; a shop's list its shop's.
    policy = policies.default if listing.scope == "*" else policies.for_shop(listing.scope)
    if listing.manual:
        because = f"by {listing.actor} (a manual decision)"
    elif listing.linked_to is not None:
        because = (
            f"through linked account {listing.linked_to}, on that blacklist "
            "(policy linked_accounts: blacklist; it ends with the link or that blacklisting)"
        )
    else:
        because = (
            f"after {policy.strike_threshold} strikes within "
            f"{_duration(policy.strike_window)}: orders {', '.join(listing.evidence) or 'none'}"
        )
        if listing.linked_evidence:
            theirs = ", ".join(f"{order} of {other}" for other, order in listing.linked_evidence)
            because += f", and of linked accounts (linked_strikes: shared): {theirs}"
    waiting = state.waiting.get(listing.scope)
    if waiting is not None:
        because += (
            f"; then through linked account {waiting.linked_to} until {_ts(waiting.until)}, "
            "unless an operator lifts this one or the link or that blacklisting ends first"
        )
    return {
        "at": _ts(listing.since),
        "decision": "blacklisted",
        "scope": listing.scope,
        "until": _ts(listing.until),
        "offence": listing.offence,
        "actor": listing.actor,
        "manual": listing.manual,
        "evidence": list(listing.evidence),
        "linked_to": listing.linked_to,
        "linked_evidence": [
            {"customer_id": other, "order_id": order} for other, order in listing.linked_evidence
        ],
        "text": (
            f"blacklisted on {_scope(listing.scope)} until {_ts(listing.until)} "
            f"(offence {listing.offence}) {because}"
        ),
    }


def _ended(scope: str, offence: int, at: datetime) -> dict[str, Any]:
    return {
        "at": _ts(at),
        "decision": "blacklisting_ended",
        "scope": scope,
        "offence": offence,
        "text": (
            f"blacklisting on {_scope(scope)} ended (offence {offence}: a next one "
            "within the repeat-offender memory lasts longer)"
        ),
    }


def _policy(policy: UnpaidPolicy) -> dict[str, Any]:
    return {
        "payment_windows": {
            method: None if window is None else _duration(window)
            for method, window in sorted(policy.payment_windows.items())
        },
        "strike_threshold": policy.strike_threshold,
        "strike_window": _duration(policy.strike_window),
        "blacklist_duration": _duration(policy.blacklist_duration),
        "late_payment_grace": _duration(policy.late_payment_grace),
        "blacklist_scope": policy.blacklist_scope,
        "buyer_cancellation_strikes": policy.buyer_cancellation_strikes,
        "linked_accounts": policy.linked_accounts,
        "linked_strikes": policy.linked_strikes,
    }


def _scope(scope: str) -> str:
    return "the platform's list" if scope == "*" else f"shop {scope}'s list"


def _ts(moment: datetime) -> str:
    return moment.isoformat()


def _duration(span: timedelta) -> str:
    """`90d`, `24h`, `30m`, `45s`: the largest whole unit, as the settings write it."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
