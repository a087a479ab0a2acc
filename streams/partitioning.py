"""Which partition a customer belongs in: Java's default murmur2 partitioner, as aiokafka uses."""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=65536)
def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Java and aiokafka clients pick for `key` among `partitions`.

    Cached because the pure-Python hash costs microseconds and customers recur.
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
