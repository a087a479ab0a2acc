"""Plays a customer's events through the unpaid core the way the agent does, for tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from hitrun.agents.effects import Effect
from hitrun.agents.policy import Policies
from hitrun.agents.unpaid import UnpaidState, advance, handle
from hitrun.schemas.records import InputEvent

DEFAULT = Policies()


def play(
    events: Iterable[InputEvent],
    until: datetime,
    policies: Policies = DEFAULT,
    customer: str = "c1",
    state: UnpaidState | None = None,
) -> tuple[list[Effect], UnpaidState]:
    """Fire timers due before each event, apply it, then fire everything due by `until`."""
    state = state or UnpaidState()
    out: list[Effect] = []
    for event in sorted(events, key=lambda e: e.occurred_at):
        state, fired = advance(state, customer, event.occurred_at, policies)
        out += fired
        state, caused = handle(state, event, policies)
        out += caused
    state, fired = advance(state, customer, until, policies)
    return out + fired, state


def of_type(effects: Iterable[Effect], kind: type) -> list:
    return [e for e in effects if isinstance(e, kind)]
