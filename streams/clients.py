"""`hitrun produce` and `hitrun tail`: the tools for the people on either side of hitrun."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click
import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from hitrun.streams.codec import decode_input
from hitrun.streams.config import Settings
from hitrun.streams.errors import InputRejected
from hitrun.streams.kafka_auth import client_options, started
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.topics import assigned_consumer, ensure_topics, read_from

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
    producer = await started(
        lambda: AIOKafkaProducer(**client_options(settings), acks="all"), settings
    )
    began = time.monotonic()
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
                out.write(f"produce: {done}/{len(lines)} sent ({time.monotonic() - began:.1f}s)\n")
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


# How long `hitrun tail` holds an alert to print it in event-time order with
# the alerts of other topics that arrive after it.
ORDER_WAIT_S = 1.0
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _wanted(value: bytes | None, types: frozenset[str], customer: str | None) -> Any:
    """The alert in `value` if it passes the filters, else None (tombstones too)."""
    if value is None:
        return None
    alert = orjson.loads(value)
    if types and alert.get("type") not in types:
        return None
    if customer is not None and alert.get("customer_id") != customer:
        return None
    return alert


def _event_time(alert: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(alert["occurred_at"])
    except (KeyError, TypeError, ValueError):  # a dead letter has no event time
        return _EARLIEST


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
    """Print alerts as they are committed to `topics`, in event-time order across topics
    (alerts of one instant: in the order of `topics`); returns how many were printed."""
    topics = list(topics)
    consumer = await assigned_consumer(settings, topics, from_beginning=from_beginning)
    printed = 0
    try:
        rank = {topic: n for n, topic in enumerate(topics)}
        held: list[tuple[tuple[Any, ...], str]] = []  # (event-time order, line)
        held_since = idle_since = time.monotonic()
        while limit is None or printed < limit:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for tp, records in batch.items():
                for record in records:
                    alert = _wanted(record.value, types, customer)
                    if alert is None:
                        continue
                    if not held:
                        held_since = now
                    order = (_event_time(alert), rank[tp.topic], tp.partition, record.offset)
                    line = (
                        record.value.decode()
                        if as_json
                        else describe(tp.topic, tp.partition, record.offset, alert)
                    )
                    held.append((order, line))
            if batch:
                idle_since = now
            # Records of different topics arrive in separate fetches: hold each for up
            # to ORDER_WAIT_S (or until a fetch comes back empty), then print in event time.
            if held and (not batch or now - held_since >= ORDER_WAIT_S):
                held.sort(key=lambda entry: entry[0])
                for _order, line in held[: None if limit is None else limit - printed]:
                    out.write(line + "\n")
                    printed += 1
                out.flush()
                held.clear()
            elif not batch and idle_timeout is not None and now - idle_since > idle_timeout:
                break
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
    # Alerts of one instant print in this order: a reminder, the expiry, the blacklisting.
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


def current_listings(
    records: Iterable[tuple[bytes | None, bytes | None]], shop: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """(customer, listing) of the latest status per customer; a tombstone clears one.

    A listing of scope "*" (the platform) applies to every shop.
    """
    latest: dict[str, dict[str, Any] | None] = {}
    for key, value in records:
        if key is None:
            continue
        latest[key.decode()] = None if value is None else orjson.loads(value)
    return [
        (customer, listing)
        for customer, status in sorted(latest.items())
        for listing in (status or {}).get("listings", ())
        if shop is None or listing["scope"] in (shop, "*")
    ]


async def read_status(settings: Settings) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of the compacted blacklist status topic, up to its current end."""
    since = {
        TopicPartition(settings.topic_blacklist_status, p): 0 for p in range(settings.partitions)
    }
    return [(record.key, record.value) async for _tp, record in read_from(settings, since)]


@click.command()
@click.option("--shop", default=None, help="Only this shop's blacklist (and the platform's).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per listing.")
def blacklist(shop: str | None, as_json: bool) -> None:
    """Print who is blacklisted now, from the compacted blacklist status topic.

    The topic keeps every customer's latest status (a null value, a
    tombstone, means "not blacklisted"); this reads it to its end and prints
    each current listing. Platform-wide listings (scope *) apply to every shop.
    """
    settings = Settings.from_env()
    listed = current_listings(asyncio.run(read_status(settings)), shop)
    for customer, listing in listed:
        if as_json:
            click.echo(orjson.dumps({"customer_id": customer, **listing}).decode())
        else:
            click.echo(
                f"{customer}  scope={listing['scope']} since={listing['since']} "
                f"until={listing['until']} offence={listing['offence']} actor={listing['actor']}"
            )
    customers = len({customer for customer, _ in listed})
    where = f"shop {shop} (or the platform)" if shop else "any shop or the platform"
    click.echo(f"blacklist: {customers} customer(s) blacklisted by {where}", err=True)
