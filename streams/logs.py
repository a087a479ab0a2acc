"""Log format: Faust's default lines, or one JSON object per line when HITRUN_LOG_JSON is set."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from mode.utils.logging import DEFAULT_COLOR_FORMAT, DEFAULT_COLORS, ExtensionFormatter

# Attributes every LogRecord has; anything else was passed in `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(ExtensionFormatter):
    """Faust's console lines, written without colorlog's per-record work when colors are off.

    colorlog builds a table of every escape code for each record and blanks
    it when the output is no terminal; with a log line per alert, that was a
    tenth of the worker's time. Without colors, this formats the same text
    with the format's color field left out; on a terminal it colors as before.
    """

    def __init__(
        self, fmt: str = DEFAULT_COLOR_FORMAT, stream: IO[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(fmt=fmt, stream=stream, **kwargs)
        out = stream or sys.stdout
        # colorlog's rule: FORCE_COLOR wins, then NO_COLOR, then "is it a terminal".
        self.colored = "FORCE_COLOR" in os.environ or (
            "NO_COLOR" not in os.environ and out.isatty()
        )
        self._plain = logging.Formatter(fmt.replace("%(log_color)s", ""))

    def formatMessage(self, record: logging.LogRecord) -> str:
        if self.colored:
            return str(super().formatMessage(record))
        return self._plain.formatMessage(record)


def logging_config(json_lines: bool, level: str) -> dict[str, Any]:
    """A dictConfig for the worker: JSON lines, or Faust's console format (merged into Faust's)."""
    # hitrun's own loggers get the level themselves: a record below it is then
    # never built (a replay logs every alert at debug), whatever the root's level.
    ours = {"hitrun": {"level": level.upper()}}
    if not json_lines:
        # Faust's own handlers and levels, with only its console formatter replaced.
        return {
            "merge": True,
            "loggers": ours,
            "formatters": {
                "colored": {
                    "()": ConsoleFormatter,
                    "fmt": DEFAULT_COLOR_FORMAT,
                    "log_colors": DEFAULT_COLORS,
                    "stream": sys.stdout,
                }
            },
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["console"], "level": level.upper()},
        "loggers": ours,
    }


class RepeatFilter(logging.Filter):
    """Lets a message through at most once per `interval_s` per (logger, format, level), and
    says how many like it were held back when the next one goes through.

    aiokafka logs every failed connection and metadata attempt, and while the
    broker is away its clients retry without pause: a worker wrote some 3,000
    lines a second during an outage. A worker's log should say the broker is
    away, not how often it looked.
    """

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        # (logger, format, level) -> (when one last went through, how many held back since)
        self._last: dict[tuple[str, Any, int], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg, record.levelno)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        held = 0 if last is None else last[1]
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.interval_s:.0f}s)"
        return True


def quiet_repeats(prefix: str = "aiokafka", interval_s: float = 10.0) -> RepeatFilter:
    """Put one RepeatFilter on the logger `prefix` and every logger below it that exists now."""
    repeat = RepeatFilter(interval_s)
    names = [
        name
        for name in logging.root.manager.loggerDict
        if name == prefix or name.startswith(prefix + ".")
    ]
    for name in {prefix, *names}:
        logging.getLogger(name).addFilter(repeat)
    return repeat


class AlertCounts:
    """Alerts logged as one line of counts by type per interval instead of one line each:
    the alert topics are the record, and a line per alert cost a fifth of a live worker's
    time. An interval of 0 logs every alert on its own line."""

    def __init__(
        self,
        log: logging.Logger,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval_s = interval_s
        self.clock = clock
        self.counts: dict[str, int] = {}
        self.since = clock()

    def note(self, alert_type: str, customer_id: str, alert_id: str) -> None:
        counting = self.interval_s > 0
        if counting:
            self.counts[alert_type] = self.counts.get(alert_type, 0) + 1
        level = logging.DEBUG if counting else logging.INFO
        if self.log.isEnabledFor(level):
            self.log.log(
                level,
                "alert %s customer=%s id=%s",
                alert_type,
                customer_id,
                alert_id,
                extra={"alert_type": alert_type, "customer_id": customer_id},
            )

    def flush(self, force: bool = False) -> None:
        """Log the counts if the interval has passed (or `force`) and there are any."""
        now = self.clock()
        if not force and now - self.since < self.interval_s:
            return
        if self.counts:
            counts = dict(sorted(self.counts.items()))
            self.log.info(
                "alerts in the last %.0fs: %s",
                now - self.since,
                ", ".join(f"{kind}={n}" for kind, n in counts.items()),
                extra={"alert_counts": counts},
            )
            self.counts = {}
        self.since = now
