"""HITRUN_LOG_JSON gives one JSON object per log line, extra fields included."""

from __future__ import annotations

import io
import logging

import orjson

from streams.logs import JsonFormatter, logging_config


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


def test_the_logging_config_is_only_set_when_json_is_asked_for() -> None:
    assert logging_config(False, "info") is None
    config = logging_config(True, "warning")
    assert config is not None
    assert config["root"]["level"] == "WARNING"
    assert config["formatters"]["json"]["()"] is JsonFormatter
    assert config["handlers"]["console"]["formatter"] == "json"
