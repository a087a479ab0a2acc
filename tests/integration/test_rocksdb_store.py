"""The default RocksDB store: states on disk per partition, a restart that reads only the
changelog's tail, and a full recovery when the store is lost.

The proof of the tail: once the first worker has stopped, one customer's state
is changed on disk behind hitrun's back (its open order renamed). A worker
that recovered the whole changelog would have overwritten it; one that kept
its store and read only the tail serves the state from disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import AccessType, Options, Rdict

from hitrun.agents.state import decode_state, encode_state
from hitrun.dev.worker import WorkerProcess
from hitrun.streams.partitioning import partition_for_key
from tests.integration.harness import (
    SUPPORT_TOKEN,
    checkout,
    payment,
    send,
    settings_of,
    unique_env,
    wait_for,
)
from tests.integration.test_unpaid_live import LIVE_POLICY

CUSTOMERS = 12
OFFSET_KEY = b"__faust\0offset__"


def changelog_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    async def run() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(run())


def rename_open_order(db_path: Path, customer: str, order: str, renamed: str) -> None:
    """Change the customer's state in its partition's database, as no worker would."""
    db = Rdict(str(db_path), options=Options(raw_mode=True), access_type=AccessType.read_write())
    try:
        state = decode_state(db[customer.encode()], customer)
        open_order = state.unpaid.open.pop(order)
        open_order.order_id = renamed
        state.unpaid.open[renamed] = open_order
        db[customer.encode()] = encode_state(state)
    finally:
        db.close()


def stored_on_disk(tables: Path) -> dict[int, dict[bytes, bytes]]:
    """Every key and value of each partition's database, read with RocksDB itself."""
    found: dict[int, dict[bytes, bytes]] = {}
    for path in sorted(tables.glob("customers-*.db")):
        partition = int(path.name.removeprefix("customers-").removesuffix(".db"))
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            found[partition] = dict(db.items())
        finally:
            db.close()
    return found


def test_states_stay_on_disk_and_a_restart_reads_only_the_changelogs_tail(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = unique_env(
        kafka_bootstrap,
        tmp_path,
        **(LIVE_POLICY | {"HITRUN_PAYMENT_WINDOWS": "card=1h", "HITRUN_SESSION_TIMEOUT": "6s"}),
    )
    # The workers inherit this process's environment: the default store, RocksDB.
    assert "HITRUN_STORE" not in env
    assert os.environ.get("HITRUN_STORE", "rocksdb://") == "rocksdb://"
    settings = settings_of(env)
    customers = [f"cust-rocks-{n}" for n in range(CUSTOMERS)]
    first = WorkerProcess(env, tmp_path / "first.log").start()
    try:
        for n, customer in enumerate(customers):
            send(settings, settings.topic_checkouts, checkout(customer, f"order-rocks-{n}"))
        wait_for(
            lambda: first.metric("hitrun_open_checkouts") == CUSTOMERS,
            30,
            "every checkout to be applied",
        )
    finally:
        assert first.stop() == 0

    changelog = settings.changelog_topic
    ends = changelog_ends(kafka_bootstrap, changelog, settings.partitions)
    on_disk = stored_on_disk(Path(settings.data_dir) / settings.app_id / "v1" / "tables")
    for customer in customers:
        key = customer.encode()
        partition = partition_for_key(key, settings.partitions)
        assert key in on_disk[partition], f"{customer} is in the database of its partition"
        assert len(decode_state(on_disk[partition][key], customer).unpaid.open) == 1
    for partition, end in ends.items():
        if end:  # the store records how far it has applied its changelog partition
            assert int(on_disk[partition][OFFSET_KEY]) == end - 1

    tables = Path(settings.data_dir) / settings.app_id / "v1" / "tables"
    moved = customers[0]
    moved_db = tables / f"customers-{partition_for_key(moved.encode(), settings.partitions)}.db"
    rename_open_order(moved_db, moved, "order-rocks-0", "order-from-disk")
    orders = {customer: f"order-rocks-{n}" for n, customer in enumerate(customers)}
    orders[moved] = "order-from-disk"
    second = WorkerProcess(env, tmp_path / "second.log").start()
    try:
        assert open_orders(second, customers) == orders, "the states came from disk"
        for customer in customers[: CUSTOMERS // 2]:
            send(settings, settings.topic_payments, payment(customer, orders[customer]))
        wait_for(
            lambda: second.metric("hitrun_open_checkouts") == CUSTOMERS - CUSTOMERS // 2,
            30,
            "half the orders to be paid from the states kept on disk",
        )
    finally:
        assert second.stop() == 0

    # The store lost: the whole changelog is read again, and nothing is missing.
    shutil.rmtree(Path(settings.data_dir) / settings.app_id)
    third = WorkerProcess(env, tmp_path / "third.log").start()
    try:
        rest = customers[CUSTOMERS // 2 :]
        assert open_orders(third, customers) == {c: orders[c] for c in rest}
        for customer in rest:
            send(settings, settings.topic_payments, payment(customer, orders[customer]))
        wait_for(
            lambda: third.metric("hitrun_open_checkouts") == 0,
            30,
            "the other half to be paid from the states recovered from the changelog",
        )
        assert third.metric("hitrun_unmatched_payments_total") == 0
    finally:
        third.stop()


def open_orders(worker: WorkerProcess, customers: list[str]) -> dict[str, str]:
    """Each customer's open order as the worker's customer view shows it."""
    found: dict[str, str] = {}
    for customer in customers:
        status, body = worker.get(f"/customers/{customer}", SUPPORT_TOKEN)
        assert status == 200, f"{customer} is known"
        for order in orjson.loads(body)["open_orders"]:
            found[customer] = order["order_id"]
    return found
