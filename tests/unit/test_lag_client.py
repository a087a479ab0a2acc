"""The consumer lag timer's admin client is closed when the worker stops, and not made again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from hitrun.streams import lag
from hitrun.streams.app import app, settings


class FakeAdmin:
    closed = False

    async def close(self) -> None:
        self.closed = True


def test_stopping_the_app_closes_the_lag_timers_admin_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Left open, its connection's tasks kept every stopping worker waiting its
    # last second, until mode gave up gathering them and cancelled them.
    admin = FakeAdmin()
    monkeypatch.setattr(lag, "_admin", admin)
    assert lag.close_admin_client in list(app.on_before_shutdown.iter_receivers(app))
    asyncio.run(lag.close_admin_client(app, signal=app.on_before_shutdown))
    assert admin.closed
    assert lag._admin is None


def test_the_lag_timer_makes_no_client_once_the_app_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    async def admin_client() -> Any:
        made.append(1)
        raise AssertionError("an admin client was made for a stopping worker")

    async def highwaters(*tps: TopicPartition) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    owned = TopicPartition(next(iter(settings.input_topics)), 0)
    stopping = SimpleNamespace(
        should_stop=True,
        assignor=SimpleNamespace(assigned_actives=lambda: {owned}),
        consumer=SimpleNamespace(highwaters=highwaters),
    )
    monkeypatch.setattr(lag, "app", stopping)
    monkeypatch.setattr(lag, "_admin_client", admin_client)
    asyncio.run(lag.refresh_consumer_lag())
    assert made == []
