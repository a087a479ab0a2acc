"""Turns detector effects into the alert records of the output topics (schemas/*.v1.schema.json)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, assert_never

import msgspec

from hitrun.agents.effects import (
    Blacklist,
    Effect,
    RecordStrike,
    ReportRecovery,
    ReverseStrike,
    SendReminder,
    Unblacklist,
)
from hitrun.agents.identity import AccountLinked, AccountUnlinked, LinkEffect, LinkPolicy
from hitrun.agents.retention import (
    FlagEarlyChurn,
    FlagInquiryOnly,
    FlagSinglePurchase,
    ReportReturn,
    RetentionEffect,
    WarnFirstPurchase,
)

# Output topic roles; streams/config.py maps each to a topic name.
REMINDERS = "reminders"
STRIKES = "strikes"
BLACKLIST = "blacklist"
RETENTION = "retention"

_DAY_S = 86_400.0


class Alert(msgspec.Struct, frozen=True):
    """One record for an output topic, keyed by customer."""

    role: str
    key: str
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body["type"])


# An alert's body holds only strings (its times formatted here), integers,
# floats, lists and dicts: msgspec writes them byte for byte as orjson does
# (floats of 1e16 and more aside, which no alert holds). Not orjson itself:
# it asks the C allocator for 1 KiB per output, more than Python's allocator
# of small objects serves, and glibc hands the top of its heap back to the
# system as soon as 128 KiB of it are free; the alerts of each batch, kept
# until it is sent, then touched fresh pages, about a page fault an alert.
# msgspec grows its output from 32 bytes, and an alert stays with Python's
# allocator. In bench-core's run an alert took 3.4 us to write with orjson
# and 1.0 us with msgspec, on average.
encode_alert = msgspec.json.Encoder().encode


def alert_id(kind: str, customer_id: str, subject: str, attempt: str) -> str:
    """Deterministic id: the same alert computed twice (a replay, a retry) has the same id."""
    material = "\x1f".join((kind, customer_id, subject, attempt)).encode()
    return hashlib.blake2b(material, digest_size=16).hexdigest()


# Alert times are written as `isoformat` writes them. msgspec writes the same text for
# a fixed offset of whole minutes, but "Z" for UTC, in about a third of the time
# (`isoformat` formats through PyUnicode_FromFormat: about 10,000 instructions a time).
# Per zone met, whether msgspec's text can be used.
_WHOLE_MINUTES: dict[tzinfo | None, bool] = {}


def _ts(moment: datetime) -> str:
    zone = moment.tzinfo
    whole = _WHOLE_MINUTES.get(zone)
    if whole is None:
        offset = zone.utcoffset(None) if type(zone) is timezone else None
        whole = _WHOLE_MINUTES[zone] = offset is not None and not offset % timedelta(minutes=1)
    if not whole:
        return moment.isoformat()
    text: str = msgspec.to_builtins(moment)
    return text[:-1] + "+00:00" if text[-1] == "Z" else text


def _money(amount_minor: int, currency: str) -> dict[str, Any]:
    return {"amount_minor": amount_minor, "currency": currency}


def _head(kind: str, customer_id: str, subject: str, attempt: str, at: datetime) -> dict[str, Any]:
    return {
        "type": kind,
        "alert_id": alert_id(kind, customer_id, subject, attempt),
        "customer_id": customer_id,
        "occurred_at": _ts(at),
    }


def _days(span: timedelta) -> float:
    return round(span.total_seconds() / _DAY_S, 6)


def retention_alert(effect: RetentionEffect) -> Alert:
    """The alert of a retention effect (topic role `retention`)."""
    cid = effect.customer_id
    if type(effect) is WarnFirstPurchase:
        body = _head("first_purchase_risk", cid, effect.order_id, "1", effect.at) | {
            "shop_id": effect.shop_id,
            "order_id": effect.order_id,
            "amount": _money(effect.amount_minor, effect.currency),
            "score": effect.score,
            "factors": list(effect.factors),
            "orders_first_day": effect.orders_first_day,
        }
    elif type(effect) is FlagSinglePurchase:
        body = _head("single_purchase", cid, effect.order_id, "1", effect.at) | {
            "shop_id": effect.shop_id,
            "order_id": effect.order_id,
            "first_purchase_at": _ts(effect.first_purchase_at),
            "amount": _money(effect.amount_minor, effect.currency),
            "window_days": _days(effect.window),
            "days_since_first_purchase": _days(effect.at - effect.first_purchase_at),
            "risk": {"score": effect.score, "factors": list(effect.factors)},
        }
    elif type(effect) is FlagEarlyChurn:
        body = _head(
            "early_churn", cid, _ts(effect.first_purchase_at), effect.last_order_id, effect.at
        ) | {
            "first_purchase_at": _ts(effect.first_purchase_at),
            "last_purchase_at": _ts(effect.last_purchase_at),
            "last_order_id": effect.last_order_id,
            "purchases": effect.purchases,
            "dormant_days": _days(effect.at - effect.last_purchase_at),
        }
    elif type(effect) is ReportReturn:
        body = _head(
            "customer_returned", cid, effect.order_id, _ts(effect.flagged_at), effect.at
        ) | {
            "shop_id": effect.shop_id,
            "order_id": effect.order_id,
            "amount": _money(effect.amount_minor, effect.currency),
            "flag": effect.flag,
            "flagged_at": _ts(effect.flagged_at),
            "days_since_flag": _days(effect.at - effect.flagged_at),
        }
    elif type(effect) is FlagInquiryOnly:
        body = _head("inquiry_only", cid, _ts(effect.first_inquiry_at), "1", effect.at) | {
            "shop_id": effect.shop_id,
            "first_inquiry_at": _ts(effect.first_inquiry_at),
            "inquiries": effect.inquiries,
            "window_days": _days(effect.window),
        }
    else:
        assert_never(effect)
    return Alert(RETENTION, cid, body)


def to_alert(effect: Effect) -> Alert | None:
    """The alert an effect publishes, or None for effects that only update metrics."""
    if isinstance(effect, SendReminder):
        body = _head(
            "payment_reminder", effect.customer_id, effect.order_id, str(effect.attempt), effect.at
        ) | {
            "shop_id": effect.shop_id,
            "order_id": effect.order_id,
            "attempt": effect.attempt,
            "time_zone": effect.time_zone,
            "orders": [
                {
                    "order_id": line.order_id,
                    "shop_id": line.shop_id,
                    "amount_due": _money(line.amount_due_minor, line.currency),
                    "deadline": _ts(line.deadline),
                }
                for line in effect.orders
            ],
        }
        return Alert(REMINDERS, effect.customer_id, body)
    if isinstance(effect, RecordStrike):
        kind = "order_expired" if effect.reason == "unpaid" else "strike_recorded"
        body = _head(kind, effect.customer_id, effect.order_id, effect.reason, effect.at) | {
            "shop_id": effect.shop_id,
            "order_id": effect.order_id,
            "strike": {
                "reason": effect.reason,
                "scope": effect.scope,
                "count": effect.strike_count,
                "threshold": effect.threshold,
                "window_days": _days(effect.window),
            },
        }
        order = effect.order
        if order is not None:
            body["order"] = {
                "checkout_at": _ts(order.checkout_at),
                "deadline": None if order.deadline is None else _ts(order.deadline),
                "payment_method": order.method,
                "total": {"amount_minor": order.total_minor, "currency": order.currency},
                "paid_minor": order.paid_minor,
                "reminders_sent": order.reminders_sent,
            }
        return Alert(STRIKES, effect.customer_id, body)
    if isinstance(effect, ReverseStrike):
        body = _head("strike_reversed", effect.customer_id, effect.order_id, "1", effect.at) | {
            "shop_id": effect.shop_id,
            "order_id": effect.order_id,
            "scope": effect.scope,
            "strike_count": effect.strike_count,
        }
        return Alert(STRIKES, effect.customer_id, body)
    if isinstance(effect, ReportRecovery):
        body = _head(
            "payment_recovered", effect.customer_id, effect.order_id, "1", effect.paid_at
        ) | {
            "shop_id": effect.shop_id,
            "order_id": effect.order_id,
            "reminders_sent": effect.reminders_sent,
            "amount": _money(effect.amount_minor, effect.currency),
        }
        return Alert(STRIKES, effect.customer_id, body)
    if isinstance(effect, Blacklist):
        # A blacklisting through a link and one the customer earns can begin at one
        # instant (a returning account linked, and its strikes counted with the other
        # account's): each has an id of its own.
        attempt = _ts(effect.since)
        if effect.linked_to is not None:
            attempt += f" through {effect.linked_to}"
        body = _head(
            "customer_blacklisted", effect.customer_id, effect.scope, attempt, effect.since
        ) | {
            "scope": effect.scope,
            "until": _ts(effect.until),
            "offence": effect.offence,
            "actor": effect.actor,
            "reason": effect.reason,
            "evidence": [
                {"order_id": e.order_id, "shop_id": e.shop_id, "reason": e.reason, "at": _ts(e.at)}
                for e in effect.evidence
            ],
        }
        if effect.note is not None:
            body["note"] = effect.note
        if effect.linked_accounts:  # customer_blacklisted.v2
            body["linked_customer_ids"] = list(effect.linked_accounts)
        return Alert(BLACKLIST, effect.customer_id, body)
    if isinstance(effect, Unblacklist):
        body = _head(
            "customer_unblacklisted", effect.customer_id, effect.scope, _ts(effect.at), effect.at
        ) | {
            "scope": effect.scope,
            "cause": effect.cause,
            "actor": effect.actor,
            "reason": effect.reason,
        }
        if effect.note is not None:
            body["note"] = effect.note
        return Alert(BLACKLIST, effect.customer_id, body | _unlisted_evidence(effect))
    return None


def _unlisted_evidence(effect: Unblacklist) -> dict[str, Any]:
    """What customer_unblacklisted.v2 adds: the blacklisting that ends, and for a reversal
    the strikes it still rests on against the threshold."""
    evidence: dict[str, Any] = {}
    ended = effect.ended
    if ended is not None:
        evidence["blacklisting"] = {
            "since": _ts(ended.since),
            "until": _ts(ended.until),
            "offence": ended.offence,
            "order_ids": list(ended.orders),
        }
        if ended.linked_orders:
            evidence["blacklisting"]["linked_order_ids"] = list(ended.linked_orders)
        if ended.linked_accounts:
            evidence["linked_customer_ids"] = list(ended.linked_accounts)
    if effect.standing is not None and effect.threshold is not None:
        evidence["strikes_standing"] = {"count": effect.standing, "threshold": effect.threshold}
    return evidence


def link_alert(effect: LinkEffect, policy: LinkPolicy) -> Alert:
    """The alert of a link effect (topic role `blacklist`), with the identifiers as evidence."""
    other = effect.other
    if isinstance(effect, AccountUnlinked):
        attempt = str(effect.generation)
        body = _head("account_unlinked", effect.customer_id, other, attempt, effect.at)
        return Alert(
            BLACKLIST,
            effect.customer_id,
            body | {"linked_customer_id": other, "cause": effect.cause},
        )
    evidence = [
        {"kind": key.split(":", 1)[0], "hash_prefix": key.split(":", 1)[1], "seen_at": _ts(at)}
        for key, at in effect.evidence
    ]
    rules = {
        "strong_kinds": sorted(policy.strong_kinds),
        "min_kinds": policy.min_kinds,
        "common_after": policy.common_after,
        "window_days": _days(policy.window),
    }
    # Ids from what the two customers' events decided, never from the order the
    # stages happened to hear of them: a replay gives the same ids.
    if isinstance(effect, AccountLinked):
        attempt = str(effect.generation)
        body = _head("account_linked", effect.customer_id, other, attempt, effect.at)
    else:
        attempt = ",".join(f"{scope}@{_ts(since)}" for scope, since, _ in effect.listings)
        body = _head("linked_account_flagged", effect.customer_id, other, attempt, effect.at)
        body["linked_blacklists"] = [scope for scope, _, _ in effect.listings]
    body |= {"linked_customer_id": other, "identifiers": evidence, "policy": rules}
    return Alert(BLACKLIST, effect.customer_id, body)
