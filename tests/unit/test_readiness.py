"""/readyz says ready once the worker's deadline index is rebuilt for its assignment, not as
soon as its partitions are assigned and its tables recovered: a worker that answers ready
would otherwise stall on the rebuild at its first records."""

from __future__ import annotations

import asyncio

import pytest
from faust.types import TP

import hitrun.agents.customer as customer
from hitrun.streams import web
from hitrun.streams.app import app
from hitrun.streams.loop import LoopStatus
from tests.unit.agent_shell import SETTINGS, Sink, checkout, run_batch

OWNED = {TP(SETTINGS.topic_checkouts, p) for p in range(SETTINGS.partitions)}


class Consumer:
    def assignment(self) -> set[TP]:
        return OWNED


@pytest.fixture
def assigned(monkeypatch: pytest.MonkeyPatch, sink: Sink) -> None:
    """Every partition assigned, the tables recovered, one customer stored."""
    monkeypatch.setattr(customer.app.assignor, "assigned_actives", lambda: OWNED)
    monkeypatch.setattr(type(app), "consumer", property(lambda self: Consumer()))
    monkeypatch.setattr(web.faust_bridge, "tables_recovered", lambda app: True)
    monkeypatch.setattr(web.consume_loop, "status", LoopStatus())
    run_batch(checkout("ready-1", "o-1"))


@pytest.mark.usefixtures("assigned")
def test_a_worker_is_ready_only_once_its_index_is_rebuilt() -> None:
    asyncio.run(web.consume_loop.on_assigned())
    assert not customer.timers.indexed
    assert web.readiness() == (False, "rebuilding the deadline index")
    web.consume_loop._prepare()
    assert customer.timers.indexed
    partition = customer.timers.partitions[customer.customers_table.partition_for_key(b"ready-1")]
    assert partition.index.due("ready-1") is not None
    assert web.readiness() == (True, f"{len(OWNED)} partitions assigned")


@pytest.mark.usefixtures("assigned")
def test_a_rebalance_makes_the_worker_unready_until_it_rebuilds_again() -> None:
    web.consume_loop._prepare()
    assert web.readiness()[0]
    asyncio.run(web.consume_loop.on_revoked())
    assert web.readiness() == (False, "rebuilding the deadline index")
    asyncio.run(web.consume_loop.on_assigned())
    assert web.readiness() == (False, "rebuilding the deadline index")
    web.consume_loop._prepare()
    assert web.readiness()[0]
