"""`hitrun replay FILE`: replay a transactions file through hitrun and print what it found.

By default the command starts its own replay-mode workers on topics of its
own (a fresh app id), so nothing else has to run but the broker, and stops
them and deletes those topics at the end; `--workers 0` publishes to the
topics of a worker group that is already running with the same settings.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from hitrun.schemas.registry import ALERT_TYPES
from hitrun.streams.config import Settings
from hitrun.streams.processes import WorkerProcess, stop_groups, topic_env, worker_env
from hitrun.streams.replay import ReplayError, ReplayReport, replay
from hitrun.streams.simulate import SimMessage
from hitrun.streams.topics import delete_topics_of, ensure_topics
from hitrun.streams.transactions import (
    EVENTS_PER_TRANSACTION,
    FileFormat,
    LineError,
    TransactionFileError,
    guess_format,
    read_transactions,
    transaction_events,
)

# A row with a zero or negative amount: a return or a cancellation, not a purchase.
NOT_A_PURCHASE = "not_a_purchase"
SHOWN_ERRORS = 20
WORKER_START_S = 120.0
# FileFormat fields, by the option that sets each.
FORMAT_OPTIONS = {
    "delimiter": "delimiter",
    "no_header": "header",
    "customer_column": "customer",
    "time_column": "time",
    "amount_column": "amount",
    "order_column": "order",
    "date_format": "date_format",
}


class ReplayWorkers:
    """Replay-mode workers this command started on topics of their own; stopped by pid."""

    def __init__(self, settings: Settings, count: int, say: Callable[[str], None]) -> None:
        self.run_id = f"{settings.app_id}-replay-{secrets.token_hex(4)}"
        self.workdir = Path(tempfile.mkdtemp(prefix="hitrun-replay-"))
        env = {
            "HITRUN_APP_ID": self.run_id,
            **topic_env(self.run_id),
            "HITRUN_CLOCK_MODE": "replay",
            "HITRUN_WATERMARK_KEY": secrets.token_hex(16),
            "HITRUN_DATA_DIR": str(self.workdir / "data"),
        }
        self.settings = Settings.from_env({**os.environ, **env})
        self.workers = [
            WorkerProcess(worker_env(env, n), self.workdir / f"worker-{n}.log")
            for n in range(count)
        ]
        self._say = say

    def launch(self) -> None:
        """Create the topics and start the workers, without waiting for them (`wait_ready`)."""
        asyncio.run(ensure_topics(self.settings))
        self._say(
            f"replay: starting {len(self.workers)} replay-mode worker(s), group {self.run_id} "
            f"(logs in {self.workdir})"
        )
        for worker in self.workers:
            worker.launch()

    def wait_ready(self) -> None:
        for worker in self.workers:
            try:
                worker.wait_ready(WORKER_START_S)
            except (RuntimeError, TimeoutError) as exc:
                raise ReplayError(f"a worker did not start: {exc}") from None

    def watch(self) -> None:
        """Raise ReplayError when a worker has exited: the replay would wait for nothing."""
        for worker in self.workers:
            process = worker.process
            if process is not None and process.poll() is not None:
                raise ReplayError(
                    f"a worker exited with {process.returncode}; its log ends:\n"
                    f"{worker.log_tail(15)}"
                )

    def stop(self, *, keep_topics: bool, failed: bool) -> None:
        stop_groups([w.process for w in self.workers if w.process is not None], 30.0)
        if not keep_topics:
            try:
                deleted = asyncio.run(delete_topics_of(self.settings, self.run_id))
                self._say(f"replay: deleted this replay's {len(deleted)} topics")
            except Exception as exc:  # the summary stands; say what is left behind
                self._say(f"replay: could not delete topics {self.run_id}*: {exc!r}")
        else:
            self._say(f"replay: topics kept: {self.run_id}.* (HITRUN_APP_ID={self.run_id})")
        if failed:
            self._say(f"replay: worker logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class ReplayRun:
    """Where a replay goes: its settings, a check that its workers live, and whether the
    topics of the workers this command started stay after it."""

    settings: Settings
    watch: Callable[[], None] | None = None
    keep_topics: bool = False
    # Waits until the workers started for the run are ready.
    ready: Callable[[], None] = lambda: None


class InputError(click.ClickException):
    """The file cannot be replayed as it is: nothing was sent, and no worker failed."""


@contextmanager
def replay_run(
    settings: Settings, workers: int, keep_topics: bool, say: Callable[[str], None]
) -> Iterator[ReplayRun]:
    """A run into the group already running (`workers` 0), or into workers started for it.

    The workers start in the background, so that reading the file overlaps their
    start-up (a few seconds of each); `ready()` waits for them.
    """
    if workers == 0:
        yield ReplayRun(settings)
        return
    group = ReplayWorkers(settings, workers, say)
    run = ReplayRun(group.settings, group.watch, keep_topics, group.wait_ready)
    failed = True
    try:
        group.launch()
        yield run
        failed = False
    except InputError:
        failed = False  # the file's fault: the workers' logs say nothing of it
        raise
    finally:
        group.stop(keep_topics=run.keep_topics, failed=failed)


def default_workers(settings: Settings) -> int:
    """One worker per core, at most one per partition."""
    return max(1, min(os.cpu_count() or 1, settings.partitions))


def print_errors(file: Path, errors: list[LineError]) -> None:
    for error in errors[:SHOWN_ERRORS]:
        click.echo(f"{file}:{error.line}: {error.reason}: {error.detail}", err=True)
    if len(errors) > SHOWN_ERRORS:
        click.echo(f"... and {len(errors) - SHOWN_ERRORS} more invalid row(s)", err=True)


def print_summary(report: ReplayReport) -> None:
    """Every alert type, those with no alert too, and the total."""
    click.echo("alerts by type:")
    for kind in sorted(set(ALERT_TYPES) | set(report.alerts)):
        click.echo(f"  {kind:<24} {report.alerts.get(kind, 0)}")
    click.echo(f"  {'total':<24} {sum(report.alerts.values())}")


def read_file(
    file: Path, fmt: FileFormat, skip_invalid: bool, shop_id: str
) -> tuple[Iterator[SimMessage], int, str]:
    """The file's events (built as they are sent), how many, and the file's digest; the
    rows left out are told. Raises InputError for a file that cannot be replayed as it is."""
    try:
        result = read_transactions(file, fmt)
    except (TransactionFileError, ValueError) as exc:
        raise InputError(str(exc)) from None
    returns = [e for e in result.errors if e.reason == NOT_A_PURCHASE]
    invalid = [e for e in result.errors if e.reason != NOT_A_PURCHASE]
    print_errors(file, invalid)
    if invalid and not skip_invalid:
        raise InputError(
            f"{len(invalid)} invalid row(s); nothing was sent (--skip-invalid replays the rest)"
        )
    try:
        messages = transaction_events(result.transactions, shop_id=shop_id, source=result.digest)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    events = EVENTS_PER_TRANSACTION * len(result.transactions)
    click.echo(f"replay: {len(result.transactions)} transactions -> {events} events")
    if returns:
        click.echo(
            f"replay: {len(returns)} row(s) with a zero or negative amount (returns, "
            "cancellations) skipped"
        )
    if invalid:
        click.echo(f"replay: {len(invalid)} invalid row(s) skipped")
    return messages, events, result.digest


@click.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Replay-mode workers to start for this replay, on topics of its own "
    "[default: one per core, at most one per partition]; 0: publish to a worker group "
    "already running with the same HITRUN_* settings.",
)
@click.option(
    "--keep-topics",
    is_flag=True,
    help="Keep the topics of the workers this command started (deleted by default).",
)
@click.option(
    "--delimiter",
    default=",",
    show_default=True,
    help="Field separator; 'whitespace' for runs of spaces or tabs. Guessed from the header "
    "when the default is not in it.",
)
@click.option("--no-header", is_flag=True, help="The first line is data; columns are positions.")
@click.option(
    "--customer-column", default="customer_id", show_default=True, help="Guessed when absent."
)
@click.option(
    "--time-column",
    default="timestamp",
    show_default=True,
    help="A date or timestamp; guessed when absent.",
)
@click.option("--amount-column", default="amount", show_default=True, help="Guessed when absent.")
@click.option(
    "--order-column",
    default=None,
    help="Rows sharing an order id are one order [default: an order or invoice column "
    "if the header has one, else each row is an order].",
)
@click.option(
    "--date-format",
    default=None,
    help="strptime format of the time column [default: ISO 8601 or YYYYMMDD, else guessed "
    "from the first rows].",
)
@click.option("--time-zone", default="UTC", show_default=True, help="For times without offset.")
@click.option("--currency", default="USD", show_default=True)
@click.option("--minor-digits", type=int, default=2, show_default=True)
@click.option("--shop-id", default="replay", show_default=True)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Replay the valid rows even if some are not (rows with a zero or negative amount "
    "are always skipped and counted).",
)
@click.option(
    "--rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Events per second to publish at, to spare a shared cluster (0: no limit).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a replay of the same file into a running group (--workers 0) that was "
    "interrupted, without sending twice.",
)
@click.option(
    "--stall-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Give up when the worker group makes no progress for this many seconds.",
)
def replay_command(
    file: Path,
    workers: int | None,
    keep_topics: bool,
    delimiter: str,
    no_header: bool,
    customer_column: str,
    time_column: str,
    amount_column: str,
    order_column: str | None,
    date_format: str | None,
    time_zone: str,
    currency: str,
    minor_digits: int,
    shop_id: str,
    skip_invalid: bool,
    rate: float,
    resume: bool,
    stall_timeout: float,
) -> None:
    """Replay a transactions file through hitrun and print the alerts it produced, by type.

    Each transaction becomes a checkout and a succeeded payment stamped with
    its historical time; watermarks follow, the last one far enough past the
    data that every window closes. hitrun starts its own replay-mode workers
    for the replay and stops them at the end; only the broker must be running.
    """
    settings = Settings.from_env()
    if workers is None:
        workers = default_workers(settings)
    if resume and workers:
        raise click.UsageError("--resume continues a replay into a running group: add --workers 0")
    context = click.get_current_context()
    given = frozenset(
        field
        for option, field in FORMAT_OPTIONS.items()
        if context.get_parameter_source(option) is click.core.ParameterSource.COMMANDLINE
    )
    try:
        fmt = FileFormat(
            delimiter=None if delimiter.lower() == "whitespace" else delimiter,
            header=not no_header,
            customer=customer_column,
            time=time_column,
            amount=amount_column,
            order=order_column,
            date_format=date_format,
            time_zone=time_zone,
            currency=currency,
            minor_digits=minor_digits,
        )
        fmt, guesses = guess_format(file, fmt, given)
    except (TransactionFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for guess in guesses:
        click.echo(f"replay: {guess}")
    try:
        with replay_run(settings, workers, keep_topics, click.echo) as run:
            # Read while the workers start.
            messages, events, source = read_file(file, fmt, skip_invalid, shop_id)
            run.ready()
            report = asyncio.run(
                replay(
                    run.settings,
                    messages,
                    source=f"replay-{source}",
                    stall_timeout_s=stall_timeout,
                    say=click.echo,
                    resume=resume,
                    rate=rate,
                    total=events,
                    watch=run.watch,
                )
            )
            click.echo(
                f"replay: processed in {report.processed_s:.1f}s "
                f"({report.messages / max(report.processed_s, 1e-9):.0f} events/s end to end)"
            )
            print_summary(report)
            # Refused records are worth a look: their dead letters stay.
            run.keep_topics |= bool(report.not_applied)
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    if report.not_applied:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(report.not_applied.items()))
        raise click.ClickException(
            f"{sum(report.not_applied.values())} of the {report.messages} published records "
            f"were dead-lettered instead of applied ({reasons}); see "
            f"{run.settings.topic_dead_letters}"
        )
