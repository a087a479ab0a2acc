"""Loads the versioned JSON Schema files and compiles them into fast validators."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

SCHEMA_DIR = Path(__file__).resolve().parent
BASE_URI = "https://hitrun.dev/schemas/"

Validator = Callable[[Any], Any]


def schema_names() -> list[str]:
    """Every schema in the contract by name, e.g. `checkout_confirmed.v1`."""
    return sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))


# Alert types on the output topics: every record schema that is neither an
# input event, a dead letter, a status record nor the shared definitions.
_NOT_ALERTS = {
    "admin_action_requested",
    "checkout_confirmed",
    "common",
    "dead_letter",
    "blacklist_status",
    "inquiry_received",
    "order_status_changed",
    "payment_attempted",
    "watermark",
}
# Once each, whatever the number of versions of its schema.
ALERT_TYPES: tuple[str, ...] = tuple(
    dict.fromkeys(
        name.rsplit(".v", 1)[0]
        for name in schema_names()
        if name.rsplit(".v", 1)[0] not in _NOT_ALERTS
    )
)


def latest_schema(kind: str) -> str:
    """The name of the latest version of the schema of `kind`, e.g. `customer_blacklisted.v2`."""
    versions = [n for n in schema_names() if n.rsplit(".v", 1)[0] == kind]
    if not versions:
        raise KeyError(kind)
    return max(versions, key=lambda n: int(n.rsplit(".v", 1)[1]))


def fields_of(name: str) -> frozenset[str]:
    """The top-level fields schema `name` allows, e.g. those of `customer_unblacklisted.v1`."""
    return frozenset(load_schema(name)["properties"])


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema `name` (e.g. `checkout_confirmed.v1`)."""
    path = SCHEMA_DIR / f"{name}.schema.json"
    schema: dict[str, Any] = orjson.loads(path.read_bytes())
    return schema


def _load_by_uri(uri: str) -> dict[str, Any]:
    # Every $ref in the contract points at a sibling file under BASE_URI; the
    # files ship with the package, so nothing is fetched over the network.
    if not uri.startswith(BASE_URI):
        raise ValueError(f"schema reference outside the contract: {uri}")
    return load_schema(uri.removeprefix(BASE_URI).removesuffix(".schema.json"))


@functools.cache
def compiled_validator(name: str) -> Validator:
    """A compiled validator for schema `name`; raises `fastjsonschema.JsonSchemaValueException`."""
    return fastjsonschema.compile(
        load_schema(name),
        handlers={"https": _load_by_uri},
        # `format` is an annotation in draft 2020-12; offsets are enforced by `pattern`
        # and the records parse the timestamps themselves.
        use_formats=False,
    )
