"""`hitrun simulate` (sample shop traffic with its ground truth) and `hitrun topics`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson

from hitrun.streams.config import Settings
from hitrun.streams.publisher import PublishStats, publish
from hitrun.streams.simulate import PARTITIONERS, GroundTruth, TrafficShape, generate
from hitrun.streams.topics import ensure_topics


@click.command()
def topics() -> None:
    """Create hitrun's topics (idempotent) and check their partition counts."""
    settings = Settings.from_env()
    created = asyncio.run(ensure_topics(settings))
    click.echo(f"created: {', '.join(created) or 'none (all exist)'}")


@click.command()
@click.option(
    "--rate",
    type=float,
    default=200.0,
    show_default=True,
    help="Messages per second; 0 publishes as fast as the broker accepts.",
)
@click.option(
    "--duration",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to publish for (count = rate x duration) unless --count is given.",
)
@click.option("--count", type=int, default=None, help="Exact number of messages to publish.")
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Random seed: same seed, same traffic."
)
@click.option(
    "--malformed-ratio",
    type=float,
    default=0.01,
    show_default=True,
    help="Share of messages that are deliberately malformed.",
)
@click.option(
    "--partitioner",
    type=click.Choice(sorted(PARTITIONERS)),
    default="murmur2",
    show_default=True,
    help="crc32 mimics librdkafka's default, to exercise the partition guard.",
)
@click.option(
    "--start",
    type=str,
    default=None,
    help="Event time of the first customer (RFC 3339); default: now, to the minute.",
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the ground truth (customer -> kind, malformed by reason) as JSON here.",
)
@click.option(
    "--identities/--no-identities",
    default=False,
    help="Put hashed identifiers (phone, e-mail, device, card, address) on checkouts and payments.",
)
@click.option(
    "--evaders",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of customers who, blacklisted, come back under a new id reusing some "
    "identifiers (implies --identities).",
)
@click.option(
    "--shared-device-users",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of customers ordering from one of 20 devices shared by strangers.",
)
def simulate(
    rate: float,
    duration: float,
    count: int | None,
    seed: int,
    malformed_ratio: float,
    partitioner: str,
    start: str | None,
    truth: str | None,
    identities: bool,
    evaders: float,
    shared_device_users: float,
) -> None:
    """Publish realistic shop traffic with a known ground truth.

    Customers who pay, pay after a reminder, never pay, refuse cash on
    delivery, buy once, buy repeatedly or only ask questions, and a share
    of malformed messages of every kind. With --evaders, blacklisted buyers who
    return under new account ids (the truth file then says whose accounts are
    one person's).
    """
    settings = Settings.from_env()
    if count is None:
        if rate <= 0:
            raise click.UsageError("--rate 0 needs --count")
        count = int(rate * duration)
    try:
        first = (
            datetime.fromisoformat(start)
            if start
            else datetime.now(UTC).replace(second=0, microsecond=0)
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--start") from None
    if first.tzinfo is None:
        raise click.BadParameter("needs a UTC offset", param_hint="--start")
    shape = TrafficShape(
        seed=seed,
        start=first,
        malformed_ratio=malformed_ratio,
        max_message_bytes=settings.max_message_bytes,
        identities=identities,
        evaders=evaders,
        shared_device_users=shared_device_users,
    )
    facts = GroundTruth()

    def progress(stats: PublishStats) -> None:
        click.echo(f"simulate: {stats.sent}/{count} sent in {stats.elapsed_s:.1f}s")

    async def run() -> PublishStats:
        await ensure_topics(settings)
        return await publish(
            settings,
            generate(shape, count, facts),
            rate=rate,
            partitioner=partitioner,
            seed=seed,
            on_progress=progress,
            # About every 5 s at the given rate (a day of traffic is 26 million
            # messages at 300/s: a tenth of it would be hours of silence).
            progress_every=max(1, int(rate * 5)) if rate > 0 else 10_000,
        )

    try:
        stats = asyncio.run(run())
    finally:
        # Kept when interrupted too: the truth of what was generated until then.
        if truth:
            Path(truth).write_bytes(orjson.dumps(facts.as_json(), option=orjson.OPT_INDENT_2))
    click.echo(
        f"simulate: sent {stats.sent} messages in {stats.elapsed_s:.1f}s "
        f"({stats.sent / max(stats.elapsed_s, 1e-9):.0f}/s); "
        f"malformed {sum(facts.malformed.values())}"
    )
