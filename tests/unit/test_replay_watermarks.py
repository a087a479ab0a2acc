"""The watermarks a replay interleaves never promise anything a later message breaks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hitrun.streams.publisher import Mark
from hitrun.streams.replay import with_watermarks
from hitrun.streams.simulate import SimMessage

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def message(seconds: int) -> SimMessage:
    at = T0 + timedelta(seconds=seconds)
    return SimMessage("checkouts", b"c", b"{}", at, "c", "replay")


@given(st.lists(st.integers(0, 50), max_size=40).map(sorted), st.integers(1, 7))
def test_every_watermark_is_older_than_every_later_message(times: list[int], every: int) -> None:
    messages = [message(t) for t in times]
    out = list(with_watermarks(messages, timedelta(days=91), "test", every=every))
    assert [m for m in out if isinstance(m, SimMessage)] == messages
    for n, item in enumerate(out):
        if isinstance(item, Mark):
            later = [m.occurred_at for m in out[n + 1 :] if isinstance(m, SimMessage)]
            assert all(item.at < t for t in later)
    marks = [m for m in out if isinstance(m, Mark)]
    assert len(marks) == (len(times) - 1) // every + 1 if times else not marks


def test_the_last_watermark_closes_every_window_past_the_data() -> None:
    out = list(with_watermarks([message(0), message(10)], timedelta(days=91), "test"))
    assert out[-1] == Mark(T0 + timedelta(seconds=10) + timedelta(days=91, seconds=1), "test")
    assert list(with_watermarks([], timedelta(days=91), "test")) == []


def test_messages_are_taken_one_at_a_time_as_they_are_sent() -> None:
    built: list[int] = []

    def transactions() -> Iterator[SimMessage]:
        for seconds in range(4):
            built.append(seconds)
            yield message(seconds)

    out = with_watermarks(transactions(), timedelta(days=91), "test", every=2)
    assert next(out) == message(0)
    assert built == [0]
    assert len(list(out)) == 3 + 1 + 1  # three more messages, one watermark between, the last
