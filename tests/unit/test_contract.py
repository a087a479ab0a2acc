"""The contract: schemas, examples, records and the codec agree with each other."""

from __future__ import annotations

from pathlib import Path

import fastjsonschema
import jsonschema
import msgspec
import orjson
import pytest
from referencing import Registry, Resource

from hitrun.agents.alerts import encode_alert
from hitrun.schemas import SCHEMA_DIR, compiled_validator, load_schema, schema_names
from hitrun.schemas.records import (
    EARLIER_VERSIONS,
    INPUT_EVENTS,
    DeadLetter,
    SourceCoordinates,
)
from hitrun.schemas.registry import ALERT_TYPES, latest_schema
from hitrun.streams.codec import decode_input, encode
from hitrun.streams.errors import InputRejected

EXAMPLES = sorted((SCHEMA_DIR / "examples").glob("*/*.json"))
VALID = [p for p in EXAMPLES if p.name.startswith("valid--")]
INVALID = [p for p in EXAMPLES if p.name.startswith("invalid--")]


def _is_json(path: Path) -> bool:
    try:
        orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return False
    return True


INPUT_SCHEMAS = {schema: event_type for event_type, (_, schema) in INPUT_EVENTS.items()}
INPUT_SCHEMAS |= EARLIER_VERSIONS
RETENTION_SCHEMAS = {
    "first_purchase_risk.v1",
    "single_purchase.v1",
    "early_churn.v1",
    "customer_returned.v1",
    "inquiry_only.v1",
}


def _registry() -> Registry:
    resources = [
        (schema["$id"], Resource.from_contents(schema))
        for schema in (load_schema(n) for n in schema_names())
    ]
    return Registry().with_resources(resources)


def reference_validator(schema_name: str) -> jsonschema.Draft202012Validator:
    schema = load_schema(schema_name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def _decode_example(path: Path) -> object:
    schema_name = path.parent.name
    event_type = INPUT_SCHEMAS[schema_name]
    raw = path.read_bytes()
    key = None
    try:
        key = orjson.loads(raw).get("customer_id", "").encode() or None
    except (orjson.JSONDecodeError, AttributeError):
        key = b"irrelevant"
    return decode_input(raw, key, frozenset({event_type}), max_bytes=65536)


def test_every_schema_is_valid_draft_2020_12_with_a_version_in_its_name() -> None:
    names = schema_names()
    assert {"checkout_confirmed.v1", "payment_attempted.v1", "dead_letter.v1"} <= set(names)
    for name in names:
        assert name.rsplit(".", 1)[1].startswith("v"), name
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_event_schema_is_named_after_its_type() -> None:
    # A schema named otherwise than `{type}.v{n}` would never be used.
    names = [n for n in schema_names() if n != "common.v1"]
    assert set(names) >= RETENTION_SCHEMAS
    for name in names:
        schema = load_schema(name)
        assert schema["$id"] == f"https://hitrun.dev/schemas/{name}.schema.json"
        kind, version = name.rsplit(".", 1)
        assert schema["properties"]["type"]["const"] == kind
        assert version == "v1" or name == latest_schema(kind), name


def test_a_later_version_of_an_alert_only_adds_optional_fields() -> None:
    # A consumer validating against an earlier version keeps reading every alert that
    # does not use what the later one added (customer_blacklisted.v2: blacklistings
    # through linked accounts).
    for kind in ALERT_TYPES:
        latest = latest_schema(kind)
        version = int(latest.rsplit(".v", 1)[1])
        for earlier in (f"{kind}.v{n}" for n in range(1, version)):
            # From the files: the cached schemas may have had their references resolved.
            old, new = (
                orjson.loads((SCHEMA_DIR / f"{name}.schema.json").read_bytes())
                for name in (earlier, latest)
            )
            assert new["required"] == old["required"], latest
            assert new["additionalProperties"] == old["additionalProperties"]
            for name, definition in old["properties"].items():
                assert new["properties"][name] == definition, (latest, name)
            for path in sorted((SCHEMA_DIR / "examples" / latest).glob("valid--*.json")):
                body = orjson.loads(path.read_bytes())
                uses_new = set(body) - set(old["properties"])
                assert reference_validator(earlier).is_valid(body) == (not uses_new), path


def test_the_current_version_of_an_input_event_accepts_every_earlier_message() -> None:
    # An earlier version stays accepted because its messages are messages of the
    # current one: its valid examples validate under the current schema, and the
    # current schema differs only by optional properties.
    current = {kind: schema for kind, (_, schema) in INPUT_EVENTS.items()}
    assert EARLIER_VERSIONS
    for earlier, kind in EARLIER_VERSIONS.items():
        # Read from the files: the loaded schemas get their references rewritten by the compiler.
        old, new = (
            orjson.loads((SCHEMA_DIR / f"{name}.schema.json").read_bytes())
            for name in (earlier, current[kind])
        )
        assert old["required"] == new["required"]
        assert set(old["properties"]) < set(new["properties"])
        for name, definition in old["properties"].items():
            if name != "type":
                assert new["properties"][name] == definition, name
        for path in sorted((SCHEMA_DIR / "examples" / earlier).glob("*.json")):
            if _is_json(path):
                body = orjson.loads(path.read_bytes())
                old_ok = reference_validator(earlier).is_valid(body)
                assert reference_validator(current[kind]).is_valid(body) == old_ok, path.name


def test_every_schema_with_examples_has_valid_and_invalid_ones() -> None:
    folders = {p.parent.name for p in EXAMPLES}
    assert set(INPUT_SCHEMAS) | RETENTION_SCHEMAS <= folders
    for folder in folders:
        assert any(p.parent.name == folder for p in VALID), folder
        assert any(p.parent.name == folder for p in INVALID), folder


@pytest.mark.parametrize("path", VALID, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_valid_example_passes_both_validators(path: Path) -> None:
    body = orjson.loads(path.read_bytes())
    reference_validator(path.parent.name).validate(body)
    compiled_validator(path.parent.name)(body)


@pytest.mark.parametrize(
    "path", [p for p in INVALID if _is_json(p)], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_compiled_validator_agrees_with_the_reference_validator(path: Path) -> None:
    body = orjson.loads(path.read_bytes())
    reference_ok = reference_validator(path.parent.name).is_valid(body)
    try:
        compiled_validator(path.parent.name)(body)
        compiled_ok = True
    except fastjsonschema.JsonSchemaValueException:
        compiled_ok = False
    assert compiled_ok == reference_ok


@pytest.mark.parametrize(
    "path",
    [p for p in INVALID if p.parent.name not in INPUT_SCHEMAS],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_invalid_output_example_is_rejected_by_both_validators(path: Path) -> None:
    # Output contracts have no decoder to reject an example for its named reason;
    # without this, an example both validators wrongly accept would pass unnoticed.
    body = orjson.loads(path.read_bytes())
    assert not reference_validator(path.parent.name).is_valid(body)
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        compiled_validator(path.parent.name)(body)


@pytest.mark.parametrize(
    "path",
    [p for p in INVALID if p.parent.name in INPUT_SCHEMAS],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_invalid_input_example_is_rejected_for_the_reason_in_its_name(path: Path) -> None:
    expected_reason = path.name.split("--")[1]
    with pytest.raises(InputRejected) as excinfo:
        _decode_example(path)
    assert excinfo.value.reason == expected_reason, excinfo.value.detail


@pytest.mark.parametrize(
    "path",
    [p for p in VALID if p.parent.name in INPUT_SCHEMAS],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_valid_input_example_round_trips_through_record_and_codec(path: Path) -> None:
    record = _decode_example(path)
    assert isinstance(record, msgspec.Struct)
    encoded = encode(record)
    body = orjson.loads(encoded)
    event_type = body["type"]
    # A record is written in the current version of its type, whichever version it was read in.
    reference_validator(INPUT_EVENTS[event_type][1]).validate(body)
    key = body["customer_id"].encode() if "customer_id" in body else None
    again = decode_input(encoded, key, frozenset({event_type}), 65536)
    assert again == record


def test_dead_letter_record_encodes_to_a_valid_dead_letter() -> None:
    record = DeadLetter(
        dead_letter_id="f" * 32,
        reason="not_json",
        detail="invalid JSON",
        source=SourceCoordinates("shop.checkouts", 1, 99, None),
        key_b64=None,
        value_b64="e30=",
    )
    reference_validator("dead_letter.v1").validate(orjson.loads(encode(record)))


@pytest.mark.parametrize(
    "path",
    [p for p in VALID if p.parent.name.split(".")[0] in ALERT_TYPES],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_an_alert_body_is_written_as_orjson_writes_it(path: Path) -> None:
    # Alerts are written by msgspec (agents/alerts.py says why); consumers and the
    # alert ids saw orjson's bytes before, and must see the same bytes now.
    body = orjson.loads(path.read_bytes())
    assert encode_alert(body) == orjson.dumps(body)
    assert encode_alert(body) == encode(body)
