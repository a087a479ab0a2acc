"""Progress marks: how far each partition's input has been read, carried through the reroute topic.

An event a producer put in the wrong partition Q reaches its customer's
partition P only after the worker owning Q has read it and written it to P's
partition of the reroute topic. P's clock must not pass a time while such an
event may still be on its way, or a deadline fires before the payment that met
it. So every live worker writes, about every `HITRUN_PROGRESS_INTERVAL`, one
mark to each partition of the reroute topic: for each partition it owns, the
event time up to which it has read (and so rerouted) that partition's input
topics. In a reroute partition a mark comes after every event the same worker
rerouted before writing it (one producer, one partition: Kafka keeps the
order), so once P has read "Q has reached t", every event of P's that was
misplaced in Q before t has been read too. P's clock moves no further than the
least of the other partitions' marks (`bound`; the furthest of each counts,
agents/customer.py `read_mark`).

A mark is a header (`PROGRESS_HEADER`) and a small JSON value:
`{"type": "source_progress", "sources": {"3": "2026-12-04T08:00:00+00:00"}}`;
a source whose progress is unknown (records unread, none read yet) is `null`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

import orjson

from hitrun.schemas.records import EARLIEST_TIME, parse_timestamp
from hitrun.streams.errors import SchemaViolation

PROGRESS_HEADER = "hitrun-progress"
MARK_HEADERS = ((PROGRESS_HEADER, b"1"),)

# Progress of each source partition: None while unknown.
Sources = Mapping[int, datetime | None]


def is_mark(headers: Iterable[tuple[str, bytes]]) -> bool:
    """Does a record of the reroute topic carry a progress mark (not a rerouted event)?"""
    return any(name == PROGRESS_HEADER for name, _ in headers)


def encode_mark(sources: Sources) -> bytes:
    return orjson.dumps(
        {
            "type": "source_progress",
            "sources": {
                str(q): None if at is None else at.isoformat() for q, at in sorted(sources.items())
            },
        }
    )


def decode_mark(value: bytes | None, partitions: int) -> dict[int, datetime | None]:
    """The sources of a mark; raises SchemaViolation for anything `encode_mark` did not write."""
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise SchemaViolation(f"a progress mark that is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("type") != "source_progress":
        raise SchemaViolation("a progress mark must be an object of type source_progress")
    sources = body.get("sources")
    if not isinstance(sources, dict) or set(body) != {"type", "sources"}:
        raise SchemaViolation("a progress mark has exactly `type` and a `sources` object")
    decoded: dict[int, datetime | None] = {}
    for name, at in sources.items():
        if not (name.isdecimal() and int(name) < partitions):
            raise SchemaViolation(f"a progress mark names partition {name!r} of {partitions}")
        if at is not None and not isinstance(at, str):
            raise SchemaViolation(f"partition {name}'s progress is not a timestamp or null")
        try:
            moment = None if at is None else parse_timestamp(at)
        except ValueError as exc:
            raise SchemaViolation(f"partition {name}'s progress: {exc}") from None
        if moment is not None and moment.utcoffset() is None:
            raise SchemaViolation(f"partition {name}'s progress has no UTC offset")
        decoded[int(name)] = moment
    return decoded


def source_progress(
    topics: Iterable[str],
    read_to: Mapping[str, datetime],
    caught_up: Callable[[str], bool],
    wall: datetime,
) -> datetime | None:
    """How far a partition's input topics are read: what its mark says (None: unknown).

    The least latest time read over the topics that still have unread records
    (an event misplaced there later than that is not yet read, nor rerouted).
    When every topic is read to its end, the later of the wall clock and the
    latest time read: what follows in the log is newer than what was read.
    """
    behind: list[datetime] = []
    for topic in topics:
        if caught_up(topic):
            continue
        at = read_to.get(topic)
        if at is None:
            return None
        behind.append(at)
    if behind:
        return min(behind)
    return max([wall, *read_to.values()])


def bound(
    sources: Sources, partition: int | None, partitions: int, waived: Iterable[int] = ()
) -> datetime | None:
    """How far partition `partition`'s clock may go: the least progress of every other
    partition but the `waived` (EARLIEST_TIME while one is unknown; None when there is
    no other). With `partition` None, of every partition but the `waived`."""
    least: datetime | None = None
    skip = {*waived} if partition is None else {partition, *waived}
    for source in range(partitions):
        if source in skip:
            continue
        at = sources.get(source)
        if at is None:
            return EARLIEST_TIME
        if least is None or at < least:
            least = at
    return least


def silent(
    heard: Mapping[int, float],
    since: float,
    now: float,
    partitions: int,
    skip: Iterable[int],
    timeout_s: float,
) -> list[tuple[int, float]]:
    """The partitions not in `skip` that no mark has named for longer than `timeout_s`
    (monotonic seconds; `heard`: when one last did, else `since`), each with how long."""
    skipped = set(skip)
    found = []
    for source in range(partitions):
        quiet = now - heard.get(source, since)
        if source not in skipped and quiet > timeout_s:
            found.append((source, quiet))
    return found
