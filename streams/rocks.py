"""The customer table's RocksDB store: Faust's, with each key's partition computed from the key.

Faust's RocksDB store keeps one database per changelog partition and picks
the database of a write from the current stream event (and of a read by
trying every database through their Bloom filters). hitrun's loop applies
whole batches outside Faust's streams, so there is no current event, and a
batch mixes partitions. The table already knows each key's partition
(`CustomerTable.partition_for_key`, the same partition as its changelog
record), so every read, write and delete here goes straight to that
partition's database. Keys of a partition this worker does not own are
absent, never opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

from faust.stores import rocksdb
from faust.types import TP, StoreT
from rocksdict import (
    AccessType,
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    Options,
    ReadOptions,
    WriteBatch,
    WriteBufferManager,
)

from hitrun.streams.fencing import Rise

# Memory per open partition database. Faust's defaults are sized for one large
# database (a 2 GiB block cache and three 64 MiB write buffers, each per
# database): with one database per partition, a worker rebuilding its store
# from the changelog reached 930 MB, and reads filled a block cache per
# partition. These bound a partition's memtables; its block cache is the
# worker's one (`shared_block_cache`).
MEMORY_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
}
# The block cache of all the partition databases of a worker together. Reads are point
# reads of a customer's state, decoded once and then kept in hitrun's own state cache,
# spread over every customer: a cache holds a small share of the blocks whatever its
# size, and the operating system's page cache still holds the files. A cache per
# database filled up to its bound in every owned partition (8 MiB each since a reopen
# gave each one rocksdict's default, `BoundedRocksOptions.open`).
BLOCK_CACHE_BYTES = 8 * 1024 * 1024
# The memtables of all the partition databases of a worker together (RocksDB's write
# buffer manager flushes the largest past it). Each database's own bound alone let a
# worker keep up to two write buffers per partition in memory, filled or not depending
# on where each partition's flush cycle stood: 64 MiB for eight partitions.
MEMTABLES_BYTES = 16 * 1024 * 1024


@cache
def shared_write_buffers() -> WriteBufferManager:
    """The process's write buffer manager, which every partition database counts against."""
    return WriteBufferManager(MEMTABLES_BYTES, False)


@cache
def shared_block_cache() -> Cache:
    """The process's block cache, which every partition database reads through."""
    return Cache(BLOCK_CACHE_BYTES)


class BoundedRocksOptions(rocksdb.RocksDBOptions):
    """Faust's options for a partition's database, its memtables and block cache counted
    with the worker's others (`shared_write_buffers`, `shared_block_cache`)."""

    def as_options(self) -> Options:
        options = super().as_options()
        if self.use_rocksdict:  # (python-rocksdb's options have no such settings)
            options.set_write_buffer_manager(shared_write_buffers())
            # Faust's table options (its Bloom filter and index), with the shared cache.
            table = BlockBasedOptions()
            table.set_bloom_filter(self.bloom_filter_size, True)
            table.set_block_cache(shared_block_cache())
            table.set_index_type(BlockBasedIndexType.binary_search())
            options.set_block_based_table_factory(table)
        return options

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        """Open the database with these options, also when it exists already.

        Given options but no column families, rocksdict opens an existing
        database's column families (its data) with the options its last open
        wrote down, and a block cache of its own of 8 MiB: none of the options
        here but the database-wide ones applied after a restart. Faust's `open`
        gives none.
        """
        if not self.use_rocksdict:
            return super().open(path, read_only=read_only)
        options = self.as_options()
        access = AccessType.read_write() if self.ttl is None else AccessType.with_ttl(self.ttl)
        db = rocksdb.DB(
            str(path), options=options, column_families={"default": options}, access_type=access
        )
        db.set_read_options(ReadOptions())
        return db


# Where the writer token last rose in a partition's changelog (streams/fencing.py),
# kept in its database beside Faust's offset key, and hidden like it.
WRITER_KEY = b"__hitrun\0writer__"


class PartitionedRocksStore(rocksdb.Store):
    """Faust's RocksDB store (rocksdict driver) addressed by the table's key partitioning."""

    def __init__(self, url: Any, app: Any, table: Any, **kwargs: Any) -> None:
        options = {**MEMORY_OPTIONS, **(kwargs.pop("options", None) or {})}
        options.setdefault("driver", "rocksdict")
        super().__init__(url, app, table, options=options, **kwargs)
        # What Faust made, with the shared write buffers and block cache, opened with them
        # also when the database exists (Faust pops the driver and read_only from
        # `self.options`).
        self.rocksdb_options = BoundedRocksOptions(
            **(self.options or {}), use_rocksdict=self.use_rocksdict
        )

    def _partition(self, key: bytes) -> int:
        return cast(int, self.table.partition_for_key(key))

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._db_for_partition(self._partition(key)).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        db = self._dbs.get(self._partition(key))
        return None if db is None else db.get(key)

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def items_of(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every key and value of one owned partition (none for a partition not open here)."""
        db = self._dbs.get(partition)
        if db is not None:
            yield from self._visible_items(db)

    def _del(self, key: bytes) -> None:
        db = self._dbs.get(self._partition(key))
        if db is not None:
            db.delete(key)

    def get_raw(self, key: bytes) -> bytes | None:
        """The stored bytes of a key, without the table's codec and sensors."""
        return self._get(key)

    def _visible_keys(self, db: Any) -> Iterator[bytes]:
        for key in super()._visible_keys(db):
            if key != WRITER_KEY:
                yield key

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        for key, value in super()._visible_items(db):
            if key != WRITER_KEY:
                yield key, value

    def stored_rise(self, partition: int) -> Rise | None:
        kept = self._db_for_partition(partition).get(WRITER_KEY)
        if kept is None:
            return None
        offset, token = kept.split()
        return int(offset), int(token)

    def store_rise(self, partition: int, rise: Rise) -> None:
        self._db_for_partition(partition).put(WRITER_KEY, b"%d %d" % rise)

    def write_raw(
        self, writes: Iterable[tuple[bytes, bytes | None]], offsets: Mapping[TP, int]
    ) -> None:
        """Write (None: delete) every key, and the changelog offsets they reach, one
        RocksDB write batch per partition: a partition's states and its offset land together.
        """
        batches: dict[int, WriteBatch] = {}

        def batch_of(partition: int) -> WriteBatch:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            return batch

        for key, value in writes:
            if value is None:
                batch_of(self._partition(key)).delete(key)
            else:
                batch_of(self._partition(key)).put(key, value)
        for tp, offset in offsets.items():
            batch_of(tp.partition).put(self.offset_key, str(offset).encode())
        for partition, batch in batches.items():
            self._db_for_partition(partition).write(batch)


def owned_items(
    store: StoreT, owned: set[int], partition_of: Callable[[bytes], int]
) -> Iterator[tuple[int, bytes, bytes | None]]:
    """(partition, key, value) of every stored record of the owned partitions.

    The RocksDB store is read database by database, each one partition; the
    memory store's keys are put in their partition by `partition_of`.
    """
    if isinstance(store, PartitionedRocksStore):
        for partition in sorted(owned):
            for key, value in store.items_of(partition):
                yield partition, key, value
        return
    for key, value in store.items():
        partition = partition_of(key)
        if partition in owned:
            yield partition, key, value


def get_raw(store: StoreT, key: bytes) -> bytes | None:
    """The stored bytes of a key of a bytes-valued table's store, whichever store it is."""
    if isinstance(store, PartitionedRocksStore):
        return store.get_raw(key)
    return cast(bytes | None, store.get(key))


def write_raw(
    store: StoreT, writes: Iterable[tuple[bytes, bytes | None]], offsets: Mapping[TP, int]
) -> None:
    """Write (None: delete) keys of a bytes-valued table's store, then its changelog offsets."""
    if isinstance(store, PartitionedRocksStore):
        store.write_raw(writes, offsets)
        return
    for key, value in writes:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
    for tp, offset in offsets.items():
        store.set_persisted_offset(tp, offset)


def stored_rise(store: StoreT, partition: int) -> Rise | None:
    """The writer token's last rise a persistent store kept of `partition` (None: none, or
    a memory store, which reads the whole changelog again)."""
    if isinstance(store, PartitionedRocksStore):
        return store.stored_rise(partition)
    return None


def store_rise(store: StoreT, partition: int, rise: Rise) -> None:
    """Keep the writer token's last rise of `partition` in a persistent store."""
    if isinstance(store, PartitionedRocksStore):
        store.store_rise(partition, rise)
