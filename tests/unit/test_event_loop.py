"""The worker's event loop is the one HITRUN_EVENT_LOOP names."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from hitrun.streams.config import Settings
from hitrun.streams.worker_command import use_event_loop


@pytest.fixture(autouse=True)
def _restore_policy() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_the_default_worker_loop_is_uvloop_in_every_new_loop() -> None:
    use_event_loop(Settings.from_env({}).event_loop)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert isinstance(loop.run_until_complete(_running_loop()), uvloop.Loop)
    finally:
        loop.close()


def test_asyncio_gives_the_standard_librarys_loop() -> None:
    use_event_loop("uvloop")
    use_event_loop("asyncio")
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_an_unknown_event_loop_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="HITRUN_EVENT_LOOP"):
        Settings.from_env({"HITRUN_EVENT_LOOP": "trio"})
