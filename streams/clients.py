"""`hitrun produce` and `hitrun tail`: the tools for the people on either side of hitrun."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.codec import decode_input
from streams.config import Settings
from streams.errors import InputRejected
from streams.kafka_auth import client_options
from streams.partitioning import partition_for_key
from streams.topics import ensure_topics

# What `hitrun produce` sends, and where: a watermark has no customer and is
# written by replays to every partition, so it is not accepted here.
PRODUCIBLE = {
    "checkout_confirmed": "topic_checkouts",
    "payment_attempted": "topic_payments",
    "order_status_changed": "topic_orders",
    "inquiry_received": "topic_inquiries",
    "admin_action_requested": "topic_admin",
}


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int
    reason: str
    detail: str


def read_lines(path: Path, settings: Settings) -> tuple[list[Line], list[BadLine]]:
    """Validate every line of a JSON-lines file against the contract; blank lines are skipped."""
    good: list[Line] = []
    bad: list[BadLine] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            value = raw.strip()
            if not value:
                continue
            try:
                body = orjson.loads(value)
            except orjson.JSONDecodeError:
                body = None
            customer = body.get("customer_id") if isinstance(body, dict) else None
            # The file has no keys: each line is keyed by its own customer_id.
            key = customer.encode() if isinstance(customer, str) else b""
            try:
                record = decode_input(value, key, frozenset(PRODUCIBLE), settings.max_message_bytes)
            except InputRejected as exc:
                bad.append(BadLine(number, exc.reason, exc.detail))
                continue
            topic = getattr(settings, PRODUCIBLE[record.type])
            good.append(Line(number, topic, key, value))
    return good, bad


async def send_lines(settings: Settings, lines: list[Line], out: TextIO) -> int:
    """Publish the lines keyed by customer, in file order, to their customers' partitions."""
    # Only the topics it writes: on a secured cluster a shop's producer may do no more.
    await ensure_topics(settings, only={line.topic for line in lines})
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for done, line in enumerate(lines, start=1):
            partition = partition_for_key(line.key, settings.partitions)
            pending.append(
                await producer.send(line.topic, line.value, key=line.key, partition=partition)
            )
            if done % 10_000 == 0:
                await asyncio.gather(*pending)
                pending.clear()
                out.write(
                    f"produce: {done}/{len(lines)} sent ({time.monotonic() - started:.1f}s)\n"
                )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(lines)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Send the valid lines even if some are invalid.")
def produce(file: Path, skip_invalid: bool) -> None:
    """Publish a JSON-lines file of shop events to hitrun's input topics, after validating it.

    Every line is checked against its JSON Schema first; if any line is
    invalid nothing is sent (unless --skip-invalid), and each bad line is
    reported with its number and reason.
    """
    settings = Settings.from_env()
    good, bad = read_lines(file, settings)
    for line in bad:
        click.echo(f"{file}:{line.number}: {line.reason}: {line.detail}", err=True)
    if bad and not skip_invalid:
        raise click.ClickException(f"{len(bad)} invalid line(s); nothing was sent")
    sent = asyncio.run(send_lines(settings, good, sys.stderr))
    click.echo(f"produce: sent {sent} event(s), skipped {len(bad)} invalid line(s)")


def describe(topic: str, partition: int, offset: int, alert: dict[str, Any]) -> str:
    """One readable line for an alert."""
    kind = alert.get("type", "?")
    parts = [str(alert.get("occurred_at", "")), kind, f"customer={alert.get('customer_id')}"]
    if "order_id" in alert:
        parts.append(f"order={alert['order_id']}")
    if kind == "payment_reminder":
        parts.append(f"attempt={alert['attempt']} orders={len(alert['orders'])}")
    elif "strike" in alert:
        parts.append(f"strikes={alert['strike']['count']}/{alert['strike']['threshold']}")
    elif kind == "strike_reversed":
        parts.append(f"strikes={alert['strike_count']}")
    elif kind in ("customer_blacklisted", "customer_unblacklisted"):
        parts.append(f"scope={alert['scope']} actor={alert['actor']}")
        parts.append(f"until={alert['until']}" if "until" in alert else f"cause={alert['cause']}")
    elif kind == "first_purchase_risk":
        parts.append(f"score={alert['score']:.2f} factors={','.join(alert['factors']) or '-'}")
    elif kind == "single_purchase":
        parts.append(f"first={alert['first_purchase_at']} risk={alert['risk']['score']:.2f}")
    elif kind == "early_churn":
        parts.append(f"purchases={alert['purchases']} last={alert['last_purchase_at']}")
    elif kind == "customer_returned":
        parts.append(f"flag={alert['flag']} days_since_flag={alert['days_since_flag']:.1f}")
    elif kind == "inquiry_only":
        parts.append(f"inquiries={alert['inquiries']} first={alert['first_inquiry_at']}")
    elif kind == "customer_erased":
        parts.append(f"requested_by={alert['requested_by']} request={alert['request_id']}")
    elif kind == "dead_letter":
        source = alert["source"]
        parts = [
            kind,
            f"reason={alert['reason']}",
            f"from={source['topic']}[{source['partition']}]@{source['offset']}",
            alert["detail"],
        ]
    return " ".join(parts)


async def follow(
    settings: Settings,
    topics: Iterable[str],
    *,
    types: frozenset[str],
    customer: str | None,
    from_beginning: bool,
    limit: int | None,
    idle_timeout: float | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """Print alerts as they are committed to `topics`; returns how many were printed."""
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    printed = 0
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or range(settings.partitions))
        ]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        idle_since = time.monotonic()
        while limit is None or printed < limit:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            for tp, records in sorted(batch.items()):
                for record in records:
                    if record.value is None:
                        continue
                    alert = orjson.loads(record.value)
                    if types and alert.get("type") not in types:
                        continue
                    if customer is not None and alert.get("customer_id") != customer:
                        continue
                    line = (
                        record.value.decode()
                        if as_json
                        else describe(tp.topic, tp.partition, record.offset, alert)
                    )
                    out.write(line + "\n")
                    out.flush()
                    printed += 1
                    if limit is not None and printed >= limit:
                        return printed
    finally:
        await consumer.stop()
    return printed


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print each alert's raw JSON.")
@click.option("--type", "types", multiple=True, help="Only alerts of this type (repeatable).")
@click.option("--customer", default=None, help="Only this customer's alerts.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record, not at the end.")
@click.option("--dead-letters", is_flag=True, help="Follow the dead-letter topic as well.")
@click.option("--max", "limit", type=int, default=None, help="Stop after printing this many.")
@click.option("--idle-timeout", type=float, default=None, help="Stop after this many idle seconds.")
def tail(
    as_json: bool,
    types: tuple[str, ...],
    customer: str | None,
    from_beginning: bool,
    dead_letters: bool,
    limit: int | None,
    idle_timeout: float | None,
) -> None:
    """Follow hitrun's alert topics (committed records only) and print the alerts."""
    settings = Settings.from_env()
    topics = [*settings.output_topics.values(), settings.topic_erasures]
    if dead_letters:
        topics.append(settings.topic_dead_letters)
    printed = asyncio.run(
        follow(
            settings,
            topics,
            types=frozenset(types),
            customer=customer,
            from_beginning=from_beginning,
            limit=limit,
            idle_timeout=idle_timeout,
            as_json=as_json,
            out=sys.stdout,
        )
    )
    click.echo(f"tail: {printed} alert(s)", err=True)
