"""`hitrun worker` and `hitrun faust`: the commands that run Faust's machinery with hitrun's app."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import click

# Every event allocates short-lived containers (records, states, futures);
# with the default threshold (700) the collector ran hundreds of times a
# second and took about 5% of a busy worker (docs/performance.md).
WORKER_GC_THRESHOLD = (10_000, 10, 10)


def freeze_startup_objects() -> None:
    """Take what the imports made out of the collector's sight (`gc.freeze`).

    Modules, classes and functions (Faust's, aiokafka's, hitrun's: about 80,000
    tracked objects) live as long as the process, yet every full collection
    walked them all again. In bench-core's run (20,000 transactions) the full
    collections took 25 instead of 75 ms, 2% of the run (docs/performance.md).
    Frozen objects are still freed by reference counting; only a cycle among
    them is never collected, and they are the process's own.
    """
    gc.collect()
    gc.freeze()


# Faust's --loglevel spells warning "warn".
FAUST_LOG_LEVELS = {"warning": "warn"}
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def use_event_loop(name: str) -> None:
    """Make `name` ("uvloop" or "asyncio") the event loop of every thread started from now on.

    Faust's consumer runs in a thread with a loop of its own; a policy covers it too.
    """
    if name == "uvloop":
        try:
            import uvloop  # not imported at module level: only the worker needs it
        except ImportError:
            raise click.ClickException(
                "HITRUN_EVENT_LOOP=uvloop but uvloop is not installed; "
                "install it or set HITRUN_EVENT_LOOP=asyncio"
            ) from None
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)


def _say_err(line: str) -> None:
    print(f"hitrun worker: {line}", file=sys.stderr, flush=True)


def run_faust(argv: list[str]) -> None:
    """Run Faust's command line on hitrun's app, with hitrun's log level unless given."""
    import hitrun.agents.customer
    import hitrun.streams.lag
    import hitrun.streams.web  # noqa: F401  (the HTTP views)
    from hitrun.streams.app import app, settings

    if not any(a.startswith(("-l", "--loglevel")) for a in argv):
        argv = [*argv, f"--loglevel={FAUST_LOG_LEVELS.get(settings.log_level, settings.log_level)}"]
    sys.argv = ["hitrun", *argv]
    freeze_startup_objects()
    app.main()


@click.command(context_settings=PASS_THROUGH)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker: read the shop's events, detect, and publish alerts.

    Creates missing topics first, waiting for the broker as long as it takes
    (one line per attempt). Workers with the same HITRUN_APP_ID share the
    partitions. Settings: HITRUN_* variables; extra arguments go to Faust's
    worker command. Exit code 70: a batch could not be published and was
    not committed (restart the worker).
    """
    from hitrun.streams.allocator import bound_arenas
    from hitrun.streams.config import Settings
    from hitrun.streams.topics import ensure_topics, topic_specs

    bound_arenas()  # before any thread starts
    settings = Settings.from_env()
    # Faust creates only the last level of its data directory; the store lives there.
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    gc.set_threshold(*WORKER_GC_THRESHOLD)
    use_event_loop(settings.event_loop)
    # hitrun creates its topics, Faust's changelog and leader topics included,
    # before the consumer subscribes (streams/topics.py says why).
    asyncio.run(ensure_topics(settings, say=_say_err, wait_forever=True))
    # Each of Faust's own declarations would cost a read of every topic's metadata.
    from hitrun.streams.faust_bridge import HitrunProducer  # Faust's import, after the arenas

    HitrunProducer.existing = frozenset(spec.name for spec in topic_specs(settings))
    run_faust(["worker", *ctx.args])


@click.command(context_settings=PASS_THROUGH)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def faust(arguments: tuple[str, ...]) -> None:
    """Run one of Faust's own commands on hitrun's app: hitrun faust -- tables.

    For diagnosis (`tables`, `agents`); hitrun's settings apply, and
    `hitrun faust -- --help` lists Faust's commands.
    """
    from hitrun.streams.config import Settings

    use_event_loop(Settings.from_env().event_loop)
    run_faust(list(arguments))
