"""A Faust agent that only counts its events: what Faust alone costs per event on this machine.

Run as a Faust app (`python -m faust -A bench.faust_floor worker`) with
FLOOR_BROKER, FLOOR_TOPICS (comma separated), FLOOR_EXPECTED and FLOOR_REPORT
set; it takes the stream in batches like hitrun's agent and, when it has seen
FLOOR_EXPECTED events, writes "<seconds from first to last event>" to
FLOOR_REPORT. Nothing is decoded, validated, stored or sent.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import faust

_topics = os.environ.get("FLOOR_TOPICS", "floor").split(",")
_expected = int(os.environ.get("FLOOR_EXPECTED", "0"))
_report = Path(os.environ.get("FLOOR_REPORT", "floor-report.txt"))

app = faust.App(
    os.environ.get("FLOOR_APP_ID", "hitrun-faust-floor"),
    broker=f"kafka://{os.environ.get('FLOOR_BROKER', '127.0.0.1:9092')}",
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_port=int(os.environ.get("FLOOR_WEB_PORT", "6098")),
    datadir=os.environ.get("FLOOR_DATA_DIR", "floor-data"),
    autodiscover=False,
)
_input = app.topic(*_topics, key_type=bytes, value_type=bytes, internal=False)


@app.agent(_input)
async def count(stream: faust.StreamT[bytes]) -> None:
    seen = 0
    first = 0.0
    # take_events exists on faust.Stream; the StreamT protocol does not declare it.
    async for batch in stream.take_events(500, within=0.02):  # type: ignore[attr-defined]
        if not first:
            first = time.perf_counter()
        seen += len(batch)
        if seen >= _expected:
            elapsed = time.perf_counter() - first
            await asyncio.to_thread(_write_report, elapsed)


def _write_report(elapsed: float) -> None:
    # Renamed into place, so the reader never sees a half-written file.
    partial = _report.with_suffix(".partial")
    partial.write_text(f"{elapsed:.3f}\n")
    partial.replace(_report)
