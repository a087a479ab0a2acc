"""Settings come from HITRUN_* variables, are validated at start and name the bad variable."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streams.config import Settings, SettingsError, parse_duration


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.partitions == 8
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.topic_checkouts == "shop.checkouts"
    assert settings.commit_interval == timedelta(seconds=1)
    assert settings.admin_token is None


def test_variables_override_defaults() -> None:
    settings = Settings.from_env(
        {"HITRUN_PARTITIONS": "12", "HITRUN_APP_ID": "shopx", "HITRUN_LOG_JSON": "yes"}
    )
    assert settings.partitions == 12
    assert settings.reroute_topic == "shopx.reroute"
    assert settings.log_json is True


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HITRUN_PARTITIONS", "zero"),
        ("HITRUN_PARTITIONS", "0"),
        ("HITRUN_WEB_PORT", "70000"),
        ("HITRUN_PROCESSING_GUARANTEE", "maybe_once"),
        ("HITRUN_COMMIT_INTERVAL", "soon"),
        ("HITRUN_LOG_JSON", "perhaps"),
        ("HITRUN_APP_ID", "  "),
    ],
)
def test_a_malformed_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_secrets_are_masked_in_repr() -> None:
    settings = Settings.from_env({"HITRUN_ADMIN_TOKEN": "s3cret-token"})
    assert settings.admin_token == "s3cret-token"
    assert "s3cret-token" not in repr(settings)
    assert "admin_token='***'" in repr(settings) or "admin_token=***" in repr(settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1500ms", timedelta(milliseconds=1500)),
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("4h", timedelta(hours=4)),
        ("90d", timedelta(days=90)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_durations_parse_with_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_duration_without_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration("90")
