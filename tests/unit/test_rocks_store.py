"""The customer table's RocksDB store: bounded memory, and a batch's writes by partition."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from faust.types import TP

import hitrun.agents.customer as customer
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.rocks import (
    BLOCK_CACHE_BYTES,
    MEMORY_OPTIONS,
    MEMTABLES_BYTES,
    PartitionedRocksStore,
    get_raw,
    shared_block_cache,
    shared_write_buffers,
    store_rise,
    stored_rise,
    write_raw,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PartitionedRocksStore]:
    opened = open_store(tmp_path)
    yield opened
    close_store(opened)


def test_each_partition_database_is_opened_with_the_bounded_memory_options(
    store: PartitionedRocksStore,
) -> None:
    options = store.rocksdb_options
    assert options.use_rocksdict
    for name, value in MEMORY_OPTIONS.items():
        assert getattr(options, name) == value
    assert shared_block_cache().get_usage() <= BLOCK_CACHE_BYTES < 64 * 1024 * 1024


def open_store(path: Path) -> PartitionedRocksStore:
    return PartitionedRocksStore(
        f"rocksdb://{path}/customers", customer.app, customer.customers_table
    )


def close_store(store: PartitionedRocksStore) -> None:
    for db in store._dbs.values():
        db.close()
    store._dbs.clear()


def test_every_partition_database_reads_through_the_shared_block_cache_also_reopened(
    tmp_path: Path,
) -> None:
    """rocksdict opens an existing database's data with the options it last wrote down and
    a block cache of its own unless told otherwise: a restarted worker had one per
    partition, each of 8 MiB."""
    keys = [f"rocks-cache-{n}".encode() for n in range(200)]
    store = open_store(tmp_path)
    write_raw(store, [(key, bytes(900)) for key in keys], {})
    for db in store._dbs.values():
        db.flush()  # into table files, read back through the block cache
    close_store(store)

    partitions = {partition_for_key(k, customer.settings.partitions) for k in keys}
    store = open_store(tmp_path)
    try:
        for partition in partitions:  # as an assignment opens them
            store._db_for_partition(partition)
        cache = shared_block_cache()
        for key in keys:
            before = cache.get_usage()
            assert get_raw(store, key) == bytes(900)
            if cache.get_usage() > before:
                break
        else:
            pytest.fail("no read of the reopened store went through the shared block cache")
        assert len(partitions) > 1
        for db in store._dbs.values():
            assert db.property_int_value("rocksdb.block-cache-capacity") == BLOCK_CACHE_BYTES
    finally:
        close_store(store)


def test_the_memtables_of_every_partition_database_count_against_one_bound(
    store: PartitionedRocksStore,
) -> None:
    manager = shared_write_buffers()
    assert manager.enabled() and manager.get_buffer_size() == MEMTABLES_BYTES
    # Less than a write buffer's worth per partition: no flush empties them meanwhile.
    per_partition = MEMORY_OPTIONS["write_buffer_size"] // 4
    count = per_partition // 1000  # states of 900 bytes, about 1,000 with their keys
    partitions = customer.settings.partitions
    names = (f"rocks-mem-{n}".encode() for n in itertools.count())
    keys: dict[int, list[bytes]] = {0: [], 1: []}
    while min(len(k) for k in keys.values()) < count:
        key = next(names)
        keys.get(partition_for_key(key, partitions), []).append(key)
    before = manager.get_usage()
    for p in (0, 1):
        write_raw(store, [(key, bytes(900)) for key in keys[p][:count]], {})
        # The write landed in the memtable of partition p's database, counted here.
        assert manager.get_usage() - before >= (p + 1) * per_partition * 3 // 4
    assert set(store._dbs) == {0, 1}


def test_a_batch_lands_in_each_key_partition_with_its_changelog_offset(
    store: PartitionedRocksStore,
) -> None:
    partitions = customer.settings.partitions
    keys = [f"rocks-c{n}".encode() for n in range(20)]
    write_raw(store, [(k, b"v1-" + k) for k in keys], {})
    gone = keys[:5]
    changelog = customer.changelog_topic_name
    offsets = {TP(changelog, p): 40 + p for p in range(partitions)}
    write_raw(store, [(k, None) for k in gone], offsets)

    for key in keys:
        expected = None if key in gone else b"v1-" + key
        assert get_raw(store, key) == expected
    for p in range(partitions):
        held = {k for k, _ in store.items_of(p)}
        assert held == {k for k in keys[5:] if partition_for_key(k, partitions) == p}
        assert store.persisted_offset(TP(changelog, p)) == 40 + p


def test_the_rocksdb_store_keeps_the_rise_out_of_sight_of_the_table(
    store: PartitionedRocksStore,
) -> None:
    key = b"c-rise"
    partition = partition_for_key(key, customer.settings.partitions)
    assert stored_rise(store, partition) is None
    write_raw(store, [(key, b"value")], {})
    store_rise(store, partition, (41, 7))
    assert stored_rise(store, partition) == (41, 7)
    assert list(store.items_of(partition)) == [(key, b"value")]
    assert list(store._visible_keys(store._db_for_partition(partition))) == [key]
