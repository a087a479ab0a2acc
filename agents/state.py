"""A customer's stored state: the detectors' states together, and their compact JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from hitrun.agents import retention, unpaid
from hitrun.agents.policy import Policies
from hitrun.agents.retention import RetentionPolicy, RetentionState, state_from_json
from hitrun.agents.unpaid import (
    ExpiredOrder,
    HeldPayment,
    Listing,
    Offences,
    OpenOrder,
    Strike,
    UnpaidState,
)

_when = datetime.fromisoformat


def _opt(text: str | None) -> datetime | None:
    return None if text is None else _when(text)


@dataclass(slots=True)
class CustomerState:
    """Everything hitrun remembers of one customer: one part per detector."""

    unpaid: UnpaidState = field(default_factory=UnpaidState)
    retention: RetentionState = field(default_factory=RetentionState)

    def is_empty(self) -> bool:
        return self.unpaid.is_empty() and self.retention.is_empty()


def next_wake(
    state: CustomerState,
    policies: Policies,
    retention_policy: RetentionPolicy,
    lateness: timedelta,
) -> datetime | None:
    """When the customer's timers must next run on the stream clock (retention's `lateness` later).

    The unpaid detector's clean-ups (ids past the dedupe window, strikes past
    their window) wake the customer only when nothing else is due: otherwise
    they wait for the customer's next event or timer, which prunes up to the
    stream clock first (`unpaid.next_cleanup` says why that is the same).
    Every paid order would else cost a wake-up of its own a week later, for a
    customer whose retention window is still open.
    """
    due = unpaid.next_timer(state.unpaid, policies)
    kept = retention.next_due(state.retention, retention_policy)
    if kept is not None and (due is None or kept + lateness < due):
        due = kept + lateness
    if due is None:
        return unpaid.next_cleanup(state.unpaid, policies)
    return due


def encode_state(state: CustomerState) -> bytes:
    """JSON bytes of the state (orjson writes dataclasses and datetimes natively)."""
    return orjson.dumps(state)


def decode_state(data: bytes) -> CustomerState:
    """The state from `encode_state`'s bytes."""
    d: dict[str, Any] = orjson.loads(data)
    if "unpaid" not in d:  # written before the retention detector existed
        return CustomerState(_unpaid(d))
    return CustomerState(_unpaid(d["unpaid"]), state_from_json(d["retention"]))


def _unpaid(d: dict[str, Any]) -> UnpaidState:
    return UnpaidState(
        open={
            k: OpenOrder(
                order_id=o["order_id"],
                shop_id=o["shop_id"],
                checkout_at=_when(o["checkout_at"]),
                deadline=_opt(o["deadline"]),
                total_minor=o["total_minor"],
                currency=o["currency"],
                method=o["method"],
                time_zone=o["time_zone"],
                paid_minor=o["paid_minor"],
                steps=[_when(s) for s in o["steps"]],
                reminders_sent=o["reminders_sent"],
            )
            for k, o in d["open"].items()
        },
        expired={
            k: ExpiredOrder(
                order_id=e["order_id"],
                shop_id=e["shop_id"],
                expired_at=_when(e["expired_at"]),
                grace_until=_when(e["grace_until"]),
                total_minor=e["total_minor"],
                currency=e["currency"],
                paid_minor=e["paid_minor"],
            )
            for k, e in d["expired"].items()
        },
        closed={k: _when(v) for k, v in d["closed"].items()},
        strikes=[
            Strike(
                order_id=s["order_id"],
                shop_id=s["shop_id"],
                scope=s["scope"],
                at=_when(s["at"]),
                reason=s["reason"],
                reversed=s["reversed"],
                consumed=s["consumed"],
            )
            for s in d["strikes"]
        ],
        listings={
            k: Listing(
                scope=v["scope"],
                since=_when(v["since"]),
                until=_when(v["until"]),
                offence=v["offence"],
                manual=v["manual"],
                actor=v["actor"],
                evidence=list(v["evidence"]),
            )
            for k, v in d["listings"].items()
        },
        offences={k: Offences(v["count"], _opt(v["last_end"])) for k, v in d["offences"].items()},
        held={
            k: [
                HeldPayment(
                    event_id=h["event_id"],
                    at=_when(h["at"]),
                    hold_until=_when(h["hold_until"]),
                    amount_minor=h["amount_minor"],
                    currency=h["currency"],
                )
                for h in holds
            ]
            for k, holds in d["held"].items()
        },
        seen={k: _when(v) for k, v in d["seen"].items()},
        last_reminder_at=_opt(d["last_reminder_at"]),
    )
