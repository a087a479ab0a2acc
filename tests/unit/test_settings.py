"""Settings come from HITRUN_* variables, are validated at start and name the bad variable."""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

import faust
import pytest

from hitrun.streams.auth import new_token
from hitrun.streams.config import Settings, SettingsError, parse_duration
from hitrun.streams.kafka_auth import client_options, faust_credentials


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.partitions == 8
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.topic_checkouts == "shop.checkouts"
    assert settings.commit_interval == timedelta(seconds=1)
    assert settings.admin_key is None
    assert settings.token_entries == ()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.dead_letter_retention == timedelta(days=14)


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


def test_secrets_are_masked_in_repr(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("from-a-file\n")
    settings = Settings.from_env(
        {
            "HITRUN_ADMIN_KEY": "s3cret-key",
            "HITRUN_WATERMARK_KEY": "w4termark-key",
            "HITRUN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HITRUN_KAFKA_SASL_USERNAME": "svc-hitrun",
            "HITRUN_KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "HITRUN_KAFKA_SSL_KEY_PASSWORD": "k3y-password",
        }
    )
    assert settings.admin_key == "s3cret-key"
    assert settings.sasl_password == "from-a-file"
    shown = repr(settings)
    for secret in ("s3cret-key", "w4termark-key", "from-a-file", "k3y-password"):
        assert secret not in shown
    assert "admin_key='***'" in shown
    assert "kafka_sasl_username='svc-hitrun'" in shown


def test_the_old_single_admin_token_is_refused_with_the_way_to_named_tokens() -> None:
    with pytest.raises(SettingsError, match="hitrun token NAME operator"):
        Settings.from_env({"HITRUN_ADMIN_TOKEN": "s3cret-token"})


def test_sasl_needs_a_user_and_a_password() -> None:
    with pytest.raises(SettingsError, match="HITRUN_KAFKA_SASL_USERNAME"):
        Settings.from_env({"HITRUN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError, match="HITRUN_KAFKA_SECURITY_PROTOCOL"):
        Settings.from_env({"HITRUN_KAFKA_SECURITY_PROTOCOL": "KERBEROS"})
    with pytest.raises(SettingsError, match="HITRUN_KAFKA_SASL_PASSWORD_FILE"):
        Settings.from_env({"HITRUN_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password"})


def test_client_options_carry_sasl_and_tls_to_every_client(tmp_path: Path) -> None:
    plain = client_options(Settings.from_env({"HITRUN_KAFKA_BOOTSTRAP": "a:1, b:2"}))
    assert plain == {"bootstrap_servers": ["a:1", "b:2"], "security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings.from_env({})) is None
    secured = Settings.from_env(
        {
            "HITRUN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "HITRUN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "HITRUN_KAFKA_SASL_USERNAME": "svc",
            "HITRUN_KAFKA_SASL_PASSWORD": "pw",
        }
    )
    options = client_options(secured)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "pw")
    context = options["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    credentials = faust_credentials(secured)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert "pw" not in repr(credentials)
    no_names = Settings.from_env(
        {"HITRUN_KAFKA_SECURITY_PROTOCOL": "SSL", "HITRUN_KAFKA_SSL_CHECK_HOSTNAME": "false"}
    )
    context = client_options(no_names)["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert isinstance(faust_credentials(no_names), faust.SSLCredentials)


def test_token_lines_are_checked_at_start(tmp_path: Path) -> None:
    _token, line = new_token("alice", "operator")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# ops\n{line}\n")
    settings = Settings.from_env(
        {"HITRUN_TOKENS_FILE": str(tokens), "HITRUN_TOKENS": new_token("bob", "support")[1]}
    )
    assert [(e.name, e.role) for e in settings.token_entries] == [
        ("alice", "operator"),
        ("bob", "support"),
    ]
    with pytest.raises(SettingsError, match="role must be one of"):
        Settings.from_env({"HITRUN_TOKENS": "carol:root:" + "0" * 64})
    with pytest.raises(SettingsError, match="not the token itself"):
        Settings.from_env({"HITRUN_TOKENS": "carol:operator:plain-token"})
    with pytest.raises(SettingsError, match="same token twice"):
        Settings.from_env({"HITRUN_TOKENS_FILE": str(tokens), "HITRUN_TOKENS": line})


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


def test_a_blacklisting_that_follows_links_needs_the_internal_key(tmp_path: Path) -> None:
    # Else anyone who can write to the identity topics could blacklist a customer.
    with pytest.raises(SettingsError, match="HITRUN_INTERNAL_KEY"):
        Settings.from_env({"HITRUN_LINKED_ACCOUNTS": "blacklist"})
    with pytest.raises(SettingsError, match="HITRUN_INTERNAL_KEY"):
        Settings.from_env({"HITRUN_LINKED_STRIKES": "shared"})
    policy_file = tmp_path / "policies.json"
    policy_file.write_text('{"shops": {"shop-9": {"linked_accounts": "blacklist"}}}')
    with pytest.raises(SettingsError, match="HITRUN_INTERNAL_KEY"):
        Settings.from_env({"HITRUN_POLICY_FILE": str(policy_file)})
    keyed = Settings.from_env(
        {"HITRUN_POLICY_FILE": str(policy_file), "HITRUN_INTERNAL_KEY": "k" * 32}
    )
    assert keyed.unpaid_policies().for_shop("shop-9").linked_accounts == "blacklist"
    assert "k" * 32 not in repr(keyed)
    assert keyed.internal_keys == (b"k" * 32,)
    rolling = Settings.from_env(
        {"HITRUN_INTERNAL_KEY": "new", "HITRUN_INTERNAL_KEY_PREVIOUS": "old"}
    )
    assert rolling.internal_keys == (b"new", b"old")
    with pytest.raises(SettingsError, match="HITRUN_INTERNAL_KEY_PREVIOUS"):
        Settings.from_env({"HITRUN_INTERNAL_KEY_PREVIOUS": "old"})
    policy_file.write_text('{"shops": {"shop-9": {"linked_accounts": "block"}}}')
    with pytest.raises(SettingsError, match="flag, blacklist, ignore"):
        Settings.from_env({"HITRUN_POLICY_FILE": str(policy_file)})
