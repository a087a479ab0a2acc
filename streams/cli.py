"""The `hitrun` command line: Faust's own commands (worker, ...) plus hitrun's."""

from __future__ import annotations

import asyncio
import gc
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from faust.cli import AppCommand, option
from faust.cli.faust import cli as faust_cli

import agents.customer  # noqa: F401  (registers the customer agent with the app)
import streams.lag
import streams.web  # noqa: F401  (registers the health views)
from streams import admin_cli, clients
from streams.app import app, settings
from streams.publisher import PublishStats, publish
from streams.replay import replay_command
from streams.simulate import PARTITIONERS, GroundTruth, TrafficShape, generate
from streams.topics import ensure_topics


@app.command()
async def topics(self: AppCommand) -> None:
    """Create hitrun's topics (idempotent) and check their partition counts."""
    created = await ensure_topics(settings)
    self.say(f"created: {', '.join(created) or 'none (all exist)'}")


@app.command(
    option(
        "--rate",
        type=float,
        default=200.0,
        show_default=True,
        help="Messages per second; 0 publishes as fast as the broker accepts.",
    ),
    option(
        "--duration",
        type=float,
        default=60.0,
        show_default=True,
        help="Seconds to publish for (count = rate x duration) unless --count is given.",
    ),
    option("--count", type=int, default=None, help="Exact number of messages to publish."),
    option(
        "--seed",
        type=int,
        default=1,
        show_default=True,
        help="Random seed: same seed, same traffic.",
    ),
    option(
        "--malformed-ratio",
        type=float,
        default=0.01,
        show_default=True,
        help="Share of messages that are deliberately malformed.",
    ),
    option(
        "--partitioner",
        type=click.Choice(sorted(PARTITIONERS)),
        default="murmur2",
        show_default=True,
        help="crc32 mimics librdkafka's default, to exercise the partition guard.",
    ),
    option(
        "--start",
        type=str,
        default=None,
        help="Event time of the first customer (RFC 3339); default: now, to the minute.",
    ),
    option(
        "--truth",
        type=click.Path(dir_okay=False, writable=True),
        default=None,
        help="Write the ground truth (customer -> kind, malformed by reason) as JSON here.",
    ),
)
async def simulate(
    self: AppCommand,
    rate: float,
    duration: float,
    count: int | None,
    seed: int,
    malformed_ratio: float,
    partitioner: str,
    start: str | None,
    truth: str | None,
) -> None:
    """Publish realistic shop traffic with a known ground truth."""
    if count is None:
        if rate <= 0:
            raise click.UsageError("--rate 0 needs --count")
        count = int(rate * duration)
    first = (
        datetime.fromisoformat(start)
        if start
        else datetime.now(UTC).replace(second=0, microsecond=0)
    )
    if first.tzinfo is None:
        raise click.BadParameter("needs a UTC offset", param_hint="--start")
    shape = TrafficShape(
        seed=seed,
        start=first,
        malformed_ratio=malformed_ratio,
        max_message_bytes=settings.max_message_bytes,
    )
    await ensure_topics(settings)
    facts = GroundTruth()

    def progress(stats: PublishStats) -> None:
        self.say(f"simulate: {stats.sent}/{count} sent in {stats.elapsed_s:.1f}s")

    stats = await publish(
        settings,
        generate(shape, count, facts),
        rate=rate,
        partitioner=partitioner,
        seed=seed,
        on_progress=progress,
        progress_every=max(1000, count // 10),
    )
    self.say(
        f"simulate: sent {stats.sent} messages in {stats.elapsed_s:.1f}s "
        f"({stats.sent / max(stats.elapsed_s, 1e-9):.0f}/s); "
        f"malformed {sum(facts.malformed.values())}"
    )
    if truth:
        data = orjson.dumps(facts.as_json(), option=orjson.OPT_INDENT_2)
        await asyncio.to_thread(Path(truth).write_bytes, data)


WORKER_GC_THRESHOLD = (10_000, 10, 10)
FAUST_LOG_LEVELS = {"warning": "warn"}


def use_event_loop(name: str) -> None:
    """Make `name` ("uvloop" or "asyncio") the event loop of every thread started from now on.

    Faust's consumer runs in a thread with a loop of its own; a policy covers it too.
    """
    if name == "uvloop":
        try:
            import uvloop  # not imported at module level: only the worker needs it
        except ImportError:
            raise SystemExit(
                "HITRUN_EVENT_LOOP=uvloop but uvloop is not installed; "
                "install it or set HITRUN_EVENT_LOOP=asyncio"
            ) from None
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)


def _say_err(line: str) -> None:
    print(f"hitrun worker: {line}", file=sys.stderr, flush=True)


def main() -> None:
    """Entry point of the `hitrun` console script."""
    # Plain click commands: they need no Faust worker around them, and their
    # exit codes reach the shell unchanged.
    faust_cli.add_command(clients.produce)
    faust_cli.add_command(clients.tail)
    faust_cli.add_command(replay_command)
    faust_cli.add_command(admin_cli.admin)
    faust_cli.add_command(admin_cli.token)
    argv = sys.argv[1:]
    if argv and argv[0] == "worker":
        # Every event allocates short-lived containers (records, states, futures);
        # with the default threshold (700) the collector ran hundreds of times a
        # second and took about 5% of a busy worker (docs/performance.md).
        gc.set_threshold(*WORKER_GC_THRESHOLD)
        use_event_loop(settings.event_loop)
        # Faust declares only its internal topics; hitrun owns its input and
        # output topics and creates them before the consumer subscribes.
        # A worker started while the broker is away waits for it, one line per attempt.
        asyncio.run(ensure_topics(settings, connect_within_s=None, say=_say_err))
        if not any(a.startswith(("-l", "--loglevel")) for a in argv):
            # Faust's --loglevel spells warning "warn".
            level = FAUST_LOG_LEVELS.get(settings.log_level, settings.log_level)
            sys.argv.insert(2, f"--loglevel={level}")
    app.main()


if __name__ == "__main__":
    main()
