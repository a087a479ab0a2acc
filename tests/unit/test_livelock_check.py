"""Faust's livelock check must not crash a worker on a partition whose position is unknown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.subscription_state import SubscriptionState

from hitrun.streams import faust_bridge
from hitrun.streams.faust_bridge import HitrunConsumer, _position_known

TP = TopicPartition("shop.checkouts", 0)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


def thread_with(loop: asyncio.AbstractEventLoop, position: int | None) -> Any:
    """A consumer thread whose aiokafka consumer has `TP` assigned, at `position`
    (None: being reset to the beginning, as a rewind leaves it)."""

    async def assigned() -> SubscriptionState:  # aiokafka builds its state in a running loop
        subscriptions = SubscriptionState()
        subscriptions.assign_from_user({TP})
        state = subscriptions.subscription.assignment.state_value(TP)
        if position is not None:
            state.seek(position)
        else:
            state.await_reset(None)
        return subscriptions

    subscriptions = loop.run_until_complete(assigned())
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subscriptions))
    return SimpleNamespace(_consumer=consumer)


def test_a_partition_being_reset_has_no_known_position(loop: asyncio.AbstractEventLoop) -> None:
    assert _position_known(thread_with(loop, 42), TP)
    assert not _position_known(thread_with(loop, None), TP)
    assert not _position_known(thread_with(loop, 42), TopicPartition("shop.checkouts", 1))
    assert not _position_known(SimpleNamespace(_consumer=None), TP)


def test_the_check_skips_it_and_checks_the_others(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[Any] = []
    parent = faust_bridge.faust_aiokafka.Consumer
    monkeypatch.setattr(parent, "verify_event_path", lambda self, now, tp: checked.append(tp))
    consumer = HitrunConsumer.__new__(HitrunConsumer)
    consumer._thread = thread_with(loop, None)  # type: ignore[assignment]
    consumer.verify_event_path(0.0, TP)
    assert checked == []
    consumer._thread = thread_with(loop, 7)  # type: ignore[assignment]
    consumer.verify_event_path(0.0, TP)
    assert checked == [TP]
