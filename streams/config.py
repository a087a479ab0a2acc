"""One settings object, read from HITRUN_* environment variables and validated at start-up."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import time, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from hitrun.agents.identity import LinkPolicy
from hitrun.agents.policy import (
    LINKED_ACCOUNT_POLICIES,
    LINKED_STRIKE_POLICIES,
    Policies,
    ReminderSchedule,
    UnpaidPolicy,
    default_windows,
)
from hitrun.agents.retention import RetentionPolicy
from hitrun.agents.risk import RiskWeights, parse_weights
from hitrun.schemas.records import IDENTIFIER_KINDS
from hitrun.streams.auth import TokenEntry, TokenFileError, parse_tokens

T = TypeVar("T")

_DURATION_FIELDS = {
    "reminder_cooldown",
    "strike_window",
    "blacklist_duration",
    "late_payment_grace",
    "payment_hold",
    "cod_max_open",
    "dedupe_window",
    "repeat_offender_memory",
}


# Policy-file fields with a fixed set of values.
_CHOICES = {
    "linked_accounts": LINKED_ACCOUNT_POLICIES,
    "linked_strikes": LINKED_STRIKE_POLICIES,
    "blacklist_scope": ("shop", "platform"),
}


def _shop_overrides(path: Path) -> dict[str, dict[str, Any]]:
    """Per-shop policy fields from a JSON file: {"shops": {"shop-1": {"strike_threshold": 2}}}."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"HITRUN_POLICY_FILE: cannot read {path}: {exc}") from None
    shops: dict[str, dict[str, Any]] = {}
    allowed = {f.name for f in fields(UnpaidPolicy)}
    for shop, values in document.get("shops", {}).items():
        unknown = set(values) - allowed
        if unknown:
            raise SettingsError(
                f"HITRUN_POLICY_FILE: shop {shop}: unknown fields {sorted(unknown)}"
            )
        parsed: dict[str, Any] = {}
        for name, value in values.items():
            if name in _DURATION_FIELDS:
                parsed[name] = parse_duration(value)
            elif name == "payment_windows":
                parsed[name] = default_windows() | _windows(value)
            elif name in _CHOICES and value not in _CHOICES[name]:
                raise SettingsError(
                    f"HITRUN_POLICY_FILE: shop {shop}: {name} must be one of "
                    f"{', '.join(_CHOICES[name])}"
                )
            else:
                parsed[name] = value
        shops[shop] = parsed
    return shops


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _any_blacklisting_follows_links(settings: Settings) -> bool:
    policies = settings.unpaid_policies()
    return any(
        policy.linked_accounts == "blacklist" or policy.linked_strikes == "shared"
        for policy in (policies.default, *policies.shops.values())
    )


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def parse_duration(text: str) -> timedelta:
    """`1500ms`, `30s`, `15m`, `4h`, `90d` -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration such as 30s, 15m, 4h or 90d, got {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise ValueError(f"expected zero or a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 < value < 65536:
        raise ValueError(f"expected a TCP port, got {text!r}")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {text!r}")
        return text

    return parse


def _durations(text: str) -> tuple[timedelta, ...]:
    """`1h,3h` -> (1h, 3h); empty or `none` -> ()."""
    if text.strip().lower() in {"", "none"}:
        return ()
    return tuple(parse_duration(part) for part in text.split(","))


def _windows(text: str) -> dict[str, timedelta | None]:
    """`card=1h,bank_transfer=24h,cash_on_delivery=none` -> {method: window}."""
    out: dict[str, timedelta | None] = {}
    for part in text.split(","):
        method, sep, value = part.strip().partition("=")
        if not sep or not method:
            raise ValueError(f"expected method=duration pairs, got {part!r}")
        out[method] = None if value.strip().lower() == "none" else parse_duration(value)
    return out


def _quiet_hours(text: str) -> tuple[time, time] | None:
    """`21:00-08:00` -> (21:00, 08:00); `off` -> None."""
    if text.strip().lower() in {"off", "none", ""}:
        return None
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"expected HH:MM-HH:MM or off, got {text!r}")
    return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())


def _identifier_kinds(text: str) -> frozenset[str]:
    """`phone,email` -> the identifier kinds, each one the contract knows."""
    kinds = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = kinds - set(IDENTIFIER_KINDS)
    if unknown:
        raise ValueError(
            f"unknown identifier kinds {sorted(unknown)}; known: {', '.join(IDENTIFIER_KINDS)}"
        )
    return kinds


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _readable_file(text: str) -> str:
    path = Path(text.strip())
    if not path.is_file():
        raise ValueError(f"no such file: {text!r}")
    return str(path)


def _secret_file(text: str) -> str:
    """The content of the file at `text` (a mounted secret), without its final newline."""
    try:
        content = Path(text.strip()).read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {text!r}: {exc.strerror}") from None
    if not content:
        raise ValueError(f"the file {text!r} is empty")
    return content


def _setting(default: str | None, parse: Callable[[str], Any], *, secret: bool = False) -> Any:
    return field(metadata={"default": default, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every knob of hitrun. Field `x_y` is read from `HITRUN_X_Y`."""

    kafka_bootstrap: str = _setting("127.0.0.1:9092", _non_empty)
    # How long a command-line tool waits for the broker before it gives up (a
    # worker waits as long as it takes).
    connect_timeout: timedelta = _setting("30s", parse_duration)
    app_id: str = _setting("hitrun", _non_empty)
    partitions: int = _setting("8", _positive_int)
    replication_factor: int = _setting("1", _positive_int)
    # Only at-least-once: the agent's record sink publishes each batch outside
    # Faust's transactions (streams/sink.py), so Kafka transactions would not
    # cover the alerts. Duplicates carry the same alert id (docs/reliability.md).
    processing_guarantee: str = _setting("at_least_once", _choice("at_least_once"))
    topic_checkouts: str = _setting("shop.checkouts", _non_empty)
    topic_payments: str = _setting("shop.payments", _non_empty)
    topic_orders: str = _setting("shop.orders", _non_empty)
    topic_inquiries: str = _setting("shop.inquiries", _non_empty)
    topic_dead_letters: str = _setting("hitrun.dead-letters", _non_empty)
    max_message_bytes: int = _setting("65536", _positive_int)
    web_host: str = _setting("127.0.0.1", _non_empty)
    web_port: int = _setting("6066", _port)
    data_dir: str = _setting(".hitrun/data", _non_empty)
    log_level: str = _setting("info", _choice("debug", "info", "warning", "error"))
    log_json: bool = _setting("false", _boolean)
    # Named HTTP tokens with roles, as `name:role:sha256-hex` lines (streams/auth.py):
    # from a file, or comma-separated in the variable; both may be used.
    tokens_file: str | None = _setting(None, _non_empty)
    tokens: str | None = _setting(None, _non_empty)
    # Shared by the workers, the HTTP API and `hitrun admin`: admin commands on
    # the admin topic are applied only when signed with it (streams/auth.py).
    admin_key: str | None = _setting(None, _non_empty, secret=True)
    # Shared by the workers only: they sign the records of the two identity topics
    # with it and apply only records signed with it (streams/auth.py); required
    # when a shop's blacklisting follows links (`linked_accounts: blacklist`).
    internal_key: str | None = _setting(None, _non_empty, secret=True)
    # The key being replaced, while a new one rolls out: records signed with it are
    # still applied (new ones are signed with HITRUN_INTERNAL_KEY). Unset it once
    # every worker runs with the new key and the identity topics are read past.
    internal_key_previous: str | None = _setting(None, _non_empty, secret=True)
    # How long a signed admin command stays valid after it was signed.
    admin_command_ttl: timedelta = _setting("15m", parse_duration)
    # Shared by the workers and `hitrun replay`, which signs its watermarks with
    # it (streams/watermarks.py); required in replay mode.
    watermark_key: str | None = _setting(None, _non_empty, secret=True)
    commit_interval: timedelta = _setting("1s", parse_duration)
    # How long the group waits for a worker that died without leaving before
    # moving its partitions to the others.
    session_timeout: timedelta = _setting("30s", parse_duration)
    topic_reminders: str = _setting("hitrun.reminders", _non_empty)
    topic_strikes: str = _setting("hitrun.strikes", _non_empty)
    topic_blacklist: str = _setting("hitrun.blacklist", _non_empty)
    topic_blacklist_status: str = _setting("hitrun.blacklist-status", _non_empty)
    topic_admin: str = _setting("hitrun.admin", _non_empty)
    topic_retention: str = _setting("hitrun.retention", _non_empty)
    topic_erasures: str = _setting("hitrun.erasures", _non_empty)
    # Dead letters keep the original bytes (personal data included): the topic
    # deletes them after this long.
    dead_letter_retention: timedelta = _setting("14d", parse_duration)
    # Secured clusters (streams/kafka_auth.py): every client hitrun creates uses these.
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    )
    kafka_sasl_mechanism: str = _setting(
        "SCRAM-SHA-512", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    )
    kafka_sasl_username: str | None = _setting(None, _non_empty)
    kafka_sasl_password: str | None = _setting(None, _non_empty, secret=True)
    # A file holding the password (a mounted secret), read at start-up.
    kafka_sasl_password_file: str | None = _setting(None, _secret_file, secret=True)
    kafka_ssl_cafile: str | None = _setting(None, _readable_file)
    kafka_ssl_certfile: str | None = _setting(None, _readable_file)
    kafka_ssl_keyfile: str | None = _setting(None, _readable_file)
    kafka_ssl_key_password: str | None = _setting(None, _non_empty, secret=True)
    kafka_ssl_check_hostname: bool = _setting("true", _boolean)
    clock_mode: str = _setting("live", _choice("live", "replay"))
    tick_interval: timedelta = _setting("1s", parse_duration)
    # Live mode: alerts are logged as one INFO line of counts by type per interval
    # (each alert is on its topic, and at debug); 0s: one INFO line per alert.
    alert_log_interval: timedelta = _setting("10s", parse_duration)
    # What the alerts carry: every field of the latest schema of each type, or (1) only
    # the fields of its v1 schema, for consumers that validate strictly against v1
    # until they move on (customer_unblacklisted.v2 adds evidence to every one).
    alert_version: str = _setting("latest", _choice("latest", "1"))
    # The customer table's store: rocksdb:// (on disk under data_dir, one database
    # per partition; a restart recovers only the changelog's tail) or memory://
    # (every state in memory, the whole changelog read at each start).
    store: str = _setting("rocksdb://", _choice("rocksdb://", "memory://"))
    # What a message whose application raises does: dead_letter (reason
    # processing_error; the partition goes on) or stop (the worker exits 70
    # without committing, as for a broker refusal).
    on_processing_error: str = _setting("dead_letter", _choice("dead_letter", "stop"))
    # The loop applies at most batch_size fetched records at a time (one fetch).
    batch_size: int = _setting("6000", _positive_int)
    # Bytes one fetch may bring per partition (Kafka's max.partition.fetch.bytes).
    fetch_max_bytes: int = _setting("4194304", _positive_int)
    # Bytes one fetch may bring over all partitions (Kafka's fetch.max.bytes): what a
    # worker holds fetched and not yet applied, whatever the number of partitions with
    # a backlog. The broker sends a partition's first record batch even when larger.
    fetch_total_bytes: int = _setting("8388608", _positive_int)
    # Bytes of one record batch the worker produces at most (alerts, state records): a
    # partition's records of a batch go in as few as fit. At most the brokers' and the
    # output topics' message.max.bytes (1,048,588 by default).
    produce_batch_bytes: int = _setting("1048576", _positive_int)
    # Customer states kept decoded between batches (about 2.5 KB each); 0: decode every batch.
    state_cache: int = _setting("20000", _count)
    # The worker's event loop: libuv's (uvloop) or the standard library's.
    event_loop: str = _setting("uvloop", _choice("uvloop", "asyncio"))
    # Policy defaults (README, "The rules"); per-shop overrides come from policy_file.
    payment_windows: dict[str, timedelta | None] = _setting(
        "card=1h,e_wallet=1h,bank_transfer=24h,virtual_account=24h,"
        "convenience_store=48h,cash_on_delivery=none",
        _windows,
    )
    reminders_after_checkout: tuple[timedelta, ...] = _setting("1h", _durations)
    reminders_before_deadline: tuple[timedelta, ...] = _setting("3h", _durations)
    reminder_cooldown: timedelta = _setting("4h", parse_duration)
    quiet_hours: tuple[time, time] | None = _setting("21:00-08:00", _quiet_hours)
    strike_threshold: int = _setting("3", _positive_int)
    strike_window: timedelta = _setting("90d", parse_duration)
    blacklist_duration: timedelta = _setting("90d", parse_duration)
    late_payment_grace: timedelta = _setting("24h", parse_duration)
    buyer_cancellation_strikes: bool = _setting("false", _boolean)
    blacklist_scope: str = _setting("shop", _choice("shop", "platform"))
    payment_hold: timedelta = _setting("1h", parse_duration)
    policy_file: str | None = _setting(None, _non_empty)
    # Linked accounts (docs/detection.md, "Linked accounts"): which identifier kinds
    # link alone, how many kinds link together, K, and how long evidence counts.
    link_strong_kinds: frozenset[str] = _setting(
        "phone,email,payment_instrument", _identifier_kinds
    )
    link_min_kinds: int = _setting("2", _positive_int)
    link_common_after: int = _setting("5", _positive_int)
    link_window: timedelta = _setting("365d", parse_duration)
    # What a strong link to a customer on a shop's blacklist does ("flag": a
    # linked_account_flagged alert; "blacklist": that, and the linked customer is
    # on the blacklist too while both last; "ignore": nothing); per shop in the
    # policy file.
    linked_accounts: str = _setting("flag", _choice(*LINKED_ACCOUNT_POLICIES))
    # "shared": strikes of strongly linked accounts count together towards a shop's
    # blacklist; "separate": each account's own. Per shop in the policy file.
    linked_strikes: str = _setting("separate", _choice(*LINKED_STRIKE_POLICIES))
    # Single purchase, then gone (definitions in docs/detection.md).
    single_purchase_window: timedelta = _setting("90d", parse_duration)
    churn_dormancy: timedelta = _setting("90d", parse_duration)
    churn_min_purchases: int = _setting("2", _positive_int)
    churn_max_purchases: int = _setting("5", _positive_int)
    flag_memory: timedelta = _setting("365d", parse_duration)
    risk_weights: RiskWeights = _setting("", parse_weights)
    # An event older than its partition's stream clock by more than this is
    # dead-lettered as `late_event`; retention windows close this much after
    # their end on the stream clock, so an accepted event is never too late for one.
    allowed_lateness: timedelta = _setting("1h", parse_duration)
    # Live mode: an event stamped further than this ahead of the worker's wall
    # clock is dead-lettered as `from_future` and never moves the stream clock.
    max_clock_skew: timedelta = _setting("5m", parse_duration)
    # Live mode: events held per partition while another input topic of the
    # partition is behind (the aligned clock); past this the oldest are applied.
    max_held_events: int = _setting("50000", _positive_int)
    # Live mode: how often, while it reads input, each worker writes how far it has
    # read its partitions to the reroute topic (every tick interval when idle), so
    # that a partition's clock waits for the events misplaced in the others
    # (streams/progress.py). 0s: no marks, no waiting (only for producers that all
    # partition with murmur2).
    progress_interval: timedelta = _setting("100ms", parse_duration)
    # Live mode: how long a partition waits for another whose progress marks have
    # stopped while the other partitions' marks still arrive (its worker died, or
    # its new owner is still recovering its state); past it, it no longer waits
    # for that partition until that partition's marks move again.
    progress_timeout: timedelta = _setting("3s", parse_duration)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default: the process environment)."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = f"HITRUN_{f.name.upper()}"
            raw = source.get(variable, f.metadata["default"])
            if raw is None:
                values[f.name] = None
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise SettingsError(f"{variable}: {exc}") from None
        if source.get("HITRUN_ADMIN_TOKEN"):
            raise SettingsError(
                "HITRUN_ADMIN_TOKEN: replaced by named tokens with roles; make one with "
                "`hitrun token NAME operator` and put its line in HITRUN_TOKENS_FILE or "
                "HITRUN_TOKENS (docs/security.md)"
            )
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        try:
            self.token_entries  # noqa: B018  # parsed now, so that a bad line stops the start
        except TokenFileError as exc:
            raise SettingsError(str(exc)) from None
        if self.kafka_security_protocol.startswith("SASL_") and (
            self.kafka_sasl_username is None or self.sasl_password is None
        ):
            raise SettingsError(
                f"HITRUN_KAFKA_SASL_USERNAME and HITRUN_KAFKA_SASL_PASSWORD (or _FILE): "
                f"required with HITRUN_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise SettingsError(
                "HITRUN_KAFKA_SSL_CERTFILE and HITRUN_KAFKA_SSL_KEYFILE: a client certificate "
                "needs both"
            )
        if self.clock_mode == "replay" and self.watermark_key is None:
            raise SettingsError(
                "HITRUN_WATERMARK_KEY: required in replay mode; the workers accept only "
                "watermarks signed with it, and `hitrun replay` signs with the same key"
            )
        if self.internal_key is None and self.internal_key_previous is not None:
            raise SettingsError(
                "HITRUN_INTERNAL_KEY_PREVIOUS: set only together with HITRUN_INTERNAL_KEY "
                "(the new key)"
            )
        if self.internal_key is None and _any_blacklisting_follows_links(self):
            raise SettingsError(
                "HITRUN_INTERNAL_KEY: required when a blacklisting follows links "
                "(linked_accounts: blacklist, linked_strikes: shared): without it anyone "
                "who can write to the identity topics could put a customer on a blacklist"
            )
        if not 2 <= self.churn_min_purchases <= self.churn_max_purchases:
            raise SettingsError(
                "HITRUN_CHURN_MIN_PURCHASES: must be at least 2 and at most "
                f"HITRUN_CHURN_MAX_PURCHASES ({self.churn_max_purchases}), "
                f"got {self.churn_min_purchases}"
            )

    @property
    def internal_keys(self) -> tuple[bytes, ...]:
        """The keys of the identity topics' records: the first signs, any verifies."""
        keys = (self.internal_key, self.internal_key_previous)
        return tuple(key.encode() for key in keys if key is not None)

    @property
    def connect_timeout_s(self) -> float:
        return self.connect_timeout.total_seconds()

    @property
    def sasl_password(self) -> str | None:
        return self.kafka_sasl_password or self.kafka_sasl_password_file

    @cached_property
    def token_entries(self) -> tuple[TokenEntry, ...]:
        """The named tokens of HITRUN_TOKENS_FILE and HITRUN_TOKENS."""
        entries: list[TokenEntry] = []
        if self.tokens_file is not None:
            try:
                text = Path(self.tokens_file).read_text()
            except OSError as exc:
                raise SettingsError(
                    f"HITRUN_TOKENS_FILE: cannot read {self.tokens_file}: {exc.strerror}"
                ) from None
            entries += parse_tokens(text, "HITRUN_TOKENS_FILE")
        if self.tokens is not None:
            entries += parse_tokens(self.tokens, "HITRUN_TOKENS")
        names = [e.name for e in entries]
        if len(names) != len(set(names)):
            raise SettingsError("HITRUN_TOKENS_FILE and HITRUN_TOKENS name the same token twice")
        return tuple(entries)

    # Derived names are computed once per settings object (the fields are
    # frozen): the agent reads some of them for every event or alert.
    @cached_property
    def reroute_topic(self) -> str:
        """Internal topic where events found in the wrong partition are sent to the right one."""
        return f"{self.app_id}.reroute"

    @cached_property
    def identity_topic(self) -> str:
        """Internal topic of identifier sightings, keyed by identifier (agents/identity.py)."""
        return f"{self.app_id}.identity"

    @cached_property
    def links_topic(self) -> str:
        """Internal topic of what the identity stage tells each customer, keyed by customer."""
        return f"{self.app_id}.identity-links"

    @cached_property
    def changelog_topic(self) -> str:
        """The customer table's changelog (Faust's name for it: `<app id>-<table>-changelog`)."""
        return f"{self.app_id}-customers-changelog"

    @cached_property
    def leader_topic(self) -> str:
        """Faust's leader assignor topic (one partition: its owner is the group's leader)."""
        return f"{self.app_id}-__assignor-__leader"

    def link_policy(self) -> LinkPolicy:
        return LinkPolicy(
            strong_kinds=self.link_strong_kinds,
            min_kinds=self.link_min_kinds,
            common_after=self.link_common_after,
            window=self.link_window,
        )

    @cached_property
    def input_topics(self) -> dict[str, frozenset[str]]:
        """Input topic -> the event types it may carry."""
        return {
            self.topic_checkouts: frozenset({"checkout_confirmed", "watermark"}),
            self.topic_payments: frozenset({"payment_attempted", "watermark"}),
            self.topic_orders: frozenset({"order_status_changed", "watermark"}),
            self.topic_inquiries: frozenset({"inquiry_received", "watermark"}),
            self.topic_admin: frozenset({"admin_action_requested"}),
        }

    @cached_property
    def watermarked_topics(self) -> tuple[str, ...]:
        """Input topics whose progress the replay-mode clock waits for."""
        return (self.topic_checkouts, self.topic_payments, self.topic_orders, self.topic_inquiries)

    @cached_property
    def output_topics(self) -> dict[str, str]:
        """Alert role (agents/alerts.py) -> topic name."""
        return {
            "reminders": self.topic_reminders,
            "strikes": self.topic_strikes,
            "blacklist": self.topic_blacklist,
            "retention": self.topic_retention,
        }

    def retention_policy(self) -> RetentionPolicy:
        """The single-purchase detector's policy from these settings."""
        return RetentionPolicy(
            window=self.single_purchase_window,
            dormancy=self.churn_dormancy,
            churn_min=self.churn_min_purchases,
            churn_max=self.churn_max_purchases,
            flag_memory=self.flag_memory,
            weights=self.risk_weights,
        )

    def replay_horizon(self) -> timedelta:
        """How far past the last event a final watermark must go to close every window."""
        return max(self.single_purchase_window, self.churn_dormancy) + self.allowed_lateness

    def unpaid_policies(self) -> Policies:
        """The unpaid-detector policy from these settings, with the policy file's shop overrides."""
        quiet_start, quiet_end = self.quiet_hours if self.quiet_hours else (None, None)
        default = UnpaidPolicy(
            payment_windows=default_windows() | self.payment_windows,
            reminders=ReminderSchedule(
                self.reminders_after_checkout, self.reminders_before_deadline
            ),
            reminder_cooldown=self.reminder_cooldown,
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            strike_threshold=self.strike_threshold,
            strike_window=self.strike_window,
            blacklist_duration=self.blacklist_duration,
            late_payment_grace=self.late_payment_grace,
            buyer_cancellation_strikes=self.buyer_cancellation_strikes,
            blacklist_scope=self.blacklist_scope,
            payment_hold=self.payment_hold,
            linked_accounts=self.linked_accounts,
            linked_strikes=self.linked_strikes,
        )
        if self.policy_file is None:
            return Policies(default)
        return Policies.from_overrides(default, _shop_overrides(Path(self.policy_file)))

    def __repr__(self) -> str:
        def show(name: str, secret: bool) -> str:
            value = getattr(self, name)
            return "'***'" if secret and value else repr(value)

        shown = (f"{f.name}={show(f.name, f.metadata['secret'])}" for f in fields(self))
        return f"Settings({', '.join(shown)})"
