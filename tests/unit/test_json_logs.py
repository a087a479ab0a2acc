"""HITRUN_LOG_JSON gives one JSON object per log line, extra fields included."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from hitrun.streams.logs import (
    AlertCounts,
    ConsoleFormatter,
    JsonFormatter,
    RepeatFilter,
    logging_config,
)


def test_a_record_becomes_one_json_line_with_its_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("hitrun.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("alert %s emitted", "order_expired", extra={"customer_id": "c1"})
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    entry = orjson.loads(line)
    assert entry["message"] == "alert order_expired emitted"
    assert entry["level"] == "info"
    assert entry["customer_id"] == "c1"
    assert entry["ts"].endswith("+00:00")


def test_json_logs_replace_the_whole_logging_config() -> None:
    config = logging_config(True, "warning")
    assert "merge" not in config
    assert config["root"]["level"] == "WARNING"
    assert config["formatters"]["json"]["()"] is JsonFormatter
    assert config["handlers"]["console"]["formatter"] == "json"


def test_console_logs_keep_fausts_handlers_and_only_swap_its_formatter() -> None:
    config = logging_config(False, "info")
    assert config["merge"] is True
    assert set(config) == {"merge", "formatters", "loggers"}
    assert config["formatters"]["colored"]["()"] is ConsoleFormatter


def test_the_console_formatter_writes_faust_lines_without_color_codes_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    formatter = ConsoleFormatter(stream=io.StringIO())
    assert not formatter.colored
    record = logging.LogRecord("hitrun", logging.INFO, __file__, 1, "alert %s", ("x",), None)
    line = formatter.format(record)
    assert "\x1b[" not in line
    assert line.rstrip().endswith("[INFO] alert x")
    assert f"[{record.process}]" in line


def test_the_console_formatter_colors_when_asked_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    formatter = ConsoleFormatter(stream=io.StringIO())
    record = logging.LogRecord("hitrun", logging.WARNING, __file__, 1, "late", (), None)
    assert "\x1b[" in formatter.format(record)


@pytest.mark.parametrize("json_lines", [True, False])
def test_hitruns_loggers_get_the_configured_level_so_records_below_it_are_never_built(
    json_lines: bool,
) -> None:
    # A replay logs every alert at debug: below the level, no record may be made.
    config = logging_config(json_lines, "info")
    assert config["loggers"]["hitrun"] == {"level": "INFO"}
    from hitrun.agents import customer
    from hitrun.streams import loop, web

    assert all(m.log.name.startswith("hitrun.") for m in (customer, loop, web))  # its children


def test_a_repeated_message_goes_through_once_per_interval_with_a_count_of_the_rest() -> None:
    now = [0.0]
    repeat = RepeatFilter(interval_s=10.0, clock=lambda: now[0])

    def record(msg: str = "Unable connect to node with id %s: %s") -> logging.LogRecord:
        return logging.LogRecord("aiokafka.client", logging.ERROR, "", 0, msg, (1, "refused"), None)

    passed = []
    for step in range(3000):  # 3,000 attempts over 15 s
        now[0] = step * 0.005
        r = record()
        if repeat.filter(r):
            passed.append((now[0], r.getMessage()))
    assert [at for at, _ in passed] == [0.0, 10.0]
    assert (
        passed[1][1]
        == "Unable connect to node with id 1: refused (1999 more like it in the last 10s)"
    )
    # Another message, or the same at another level, has its own allowance.
    assert repeat.filter(record("Unable to update metadata from %s"))
    other_level = record()
    other_level.levelno = logging.WARNING
    assert repeat.filter(other_level)


def test_the_workers_aiokafka_loggers_carry_the_repeat_filter() -> None:
    import hitrun.streams.app  # noqa: F401  (installs it)

    # aiokafka.client logs as "aiokafka"; the fetcher, coordinator and sender as themselves.
    for name in ("aiokafka", "aiokafka.consumer.fetcher", "aiokafka.producer.sender"):
        assert any(isinstance(f, RepeatFilter) for f in logging.getLogger(name).filters), name


def _alert_log(interval_s: float) -> tuple[AlertCounts, list[logging.LogRecord], list[float]]:
    now = [0.0]
    records: list[logging.LogRecord] = []
    logger = logging.getLogger(f"hitrun.test.alerts.{interval_s}")
    logger.setLevel(logging.INFO)
    logger.propagate = False

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.handlers = [Keep()]
    return AlertCounts(logger, interval_s, clock=lambda: now[0]), records, now


def test_live_alerts_are_logged_as_counts_by_type_once_per_interval() -> None:
    counts, records, now = _alert_log(10.0)
    for n in range(500):
        counts.note("payment_reminder" if n % 5 else "order_expired", f"c{n}", f"a{n}")
        counts.flush()
    assert records == []  # nothing per alert at INFO, and the interval has not passed
    now[0] = 10.0
    counts.flush()
    (line,) = records
    assert line.getMessage() == "alerts in the last 10s: order_expired=100, payment_reminder=400"
    assert line.alert_counts == {"order_expired": 100, "payment_reminder": 400}  # type: ignore[attr-defined]
    now[0] = 25.0
    counts.flush()
    assert len(records) == 1  # no alerts, no line


def test_an_interval_of_zero_logs_each_alert() -> None:
    counts, records, _ = _alert_log(0.0)
    counts.note("customer_returned", "c1", "a1")
    counts.flush(force=True)
    assert [r.getMessage() for r in records] == ["alert customer_returned customer=c1 id=a1"]
