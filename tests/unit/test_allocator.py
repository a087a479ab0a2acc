"""The worker's allocator settings: glibc's arenas bounded, free pages given back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hitrun.streams import allocator


def test_an_operators_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert allocator.bound_arenas() is False


def test_threads_share_the_bounded_arenas() -> None:
    # Eight threads that each allocate: glibc gives each its own arena unless bounded.
    # (In a child process: arenas, once made, stay for the process's life.)
    script = """
import ctypes, threading, sys
from hitrun.streams import allocator
if sys.argv[1] == "bounded":
    allocator.bound_arenas(2)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    for _ in range(200):
        libc.free(ctypes.c_void_p(libc.malloc(1 << 16)))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()
"""
    arenas = {}
    for mode in ("bounded", "default"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        )
        arenas[mode] = done.stderr.count("Arena ")
    assert arenas["bounded"] <= 2 < arenas["default"]


def test_free_pages_inside_the_heap_go_back_to_the_system() -> None:
    # 128 MB in 32 KiB blocks, all freed but the last (which keeps the heap's
    # top in use, so free() alone returns nothing): the trim gives the rest back.
    script = """
import ctypes
from hitrun.streams import allocator
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def rss():
    line = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
    return int(line.split()[1]) // 1024
blocks = [libc.malloc(32 * 1024) for _ in range(4096)]
for block in blocks:
    ctypes.memset(block, 1, 32 * 1024)
for block in blocks[:-1]:
    libc.free(ctypes.c_void_p(block))
before = rss()
given = allocator.give_back()
print(given, before, rss())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    given, before, after = done.stdout.split()
    assert given == "True"
    assert int(before) - int(after) > 100, (before, after)
