"""One settings object, read from HITRUN_* environment variables and validated at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


def parse_duration(text: str) -> timedelta:
    """`1500ms`, `30s`, `15m`, `4h`, `90d` -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration such as 30s, 15m, 4h or 90d, got {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text)
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


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _setting(default: str | None, parse: Callable[[str], Any], *, secret: bool = False) -> Any:
    return field(metadata={"default": default, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every knob of hitrun. Field `x_y` is read from `HITRUN_X_Y`."""

    kafka_bootstrap: str = _setting("127.0.0.1:9092", _non_empty)
    app_id: str = _setting("hitrun", _non_empty)
    partitions: int = _setting("8", _positive_int)
    replication_factor: int = _setting("1", _positive_int)
    processing_guarantee: str = _setting("at_least_once", _choice("at_least_once", "exactly_once"))
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
    admin_token: str | None = _setting(None, _non_empty, secret=True)
    commit_interval: timedelta = _setting("1s", parse_duration)

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
        return cls(**values)

    @property
    def reroute_topic(self) -> str:
        """Internal topic where events found in the wrong partition are sent to the right one."""
        return f"{self.app_id}.reroute"

    @property
    def input_topics(self) -> dict[str, frozenset[str]]:
        """Input topic -> the event types it may carry."""
        return {
            self.topic_checkouts: frozenset({"checkout_confirmed"}),
            self.topic_payments: frozenset({"payment_attempted"}),
            self.topic_orders: frozenset({"order_status_changed"}),
            self.topic_inquiries: frozenset({"inquiry_received"}),
        }

    def __repr__(self) -> str:
        def show(name: str, secret: bool) -> str:
            value = getattr(self, name)
            return "'***'" if secret and value else repr(value)

        shown = (f"{f.name}={show(f.name, f.metadata['secret'])}" for f in fields(self))
        return f"Settings({', '.join(shown)})"
