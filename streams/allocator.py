"""The worker's use of the C allocator (glibc): few arenas, and freed memory given back.

glibc gives a thread that allocates while another holds the main arena an
arena of its own, up to eight per core: the consumer's thread, RocksDB's
background threads and the event loop each keep freed memory in theirs. Two
arenas, and a trim after each assignment's rebuild of the deadline index
(which scans every owned state), took 6 to 19 MB off a worker holding a
million customers' states (`make bench-scale`, docs/performance.md).
Elsewhere than glibc both are no-ops; `MALLOC_ARENA_MAX` in the environment
still wins.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def bound_arenas(count: int = ARENAS) -> bool:
    """Let the process use at most `count` malloc arenas (call before threads start)."""
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, count))


def give_back() -> bool:
    """Return the allocator's free pages to the operating system (glibc's malloc_trim)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
