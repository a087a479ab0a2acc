"""The typed decoder and the JSON Schemas give the same verdicts and the same records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitrun.schemas import SCHEMA_DIR, load_schema, wire
from hitrun.schemas.records import INPUT_EVENTS
from hitrun.streams import codec
from hitrun.streams.errors import InputRejected

ALL_TYPES = frozenset(INPUT_EVENTS)
EXAMPLES = sorted(
    p
    for event_type, (_, schema) in INPUT_EVENTS.items()
    for p in (SCHEMA_DIR / "examples" / schema).glob("*.json")
)
TEMPLATES: list[dict[str, Any]] = [
    json.loads(p.read_text()) for p in EXAMPLES if p.name.startswith("valid--")
]


def verdicts(value: bytes) -> tuple[object, object]:
    """(typed decoder, schema path): each a record, or the refusal."""
    try:
        fast: object = wire.decode(value)
    except wire.Refused:
        fast = "refused"
    try:
        checked: object = codec._checked(value, ALL_TYPES)
    except InputRejected as exc:
        checked = exc.reason
    return fast, checked


def assert_agree(value: bytes) -> None:
    fast, checked = verdicts(value)
    if fast != "refused":
        assert fast == checked, f"different verdicts for {value!r}: {fast!r} against {checked!r}"
    elif not isinstance(checked, str):
        # JSON Schema counts 2.0 as an integer; the typed decoder does not. The
        # schema path then gives the record the typed decoder gives for 2.
        whole = orjson.dumps(codec.whole_numbers(orjson.loads(value)))
        assert whole != orjson.dumps(orjson.loads(value)), f"only the schema accepts {value!r}"
        assert wire.decode(whole) == checked, f"{value!r} is read as {checked!r}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_input_example_gets_the_same_verdict_from_both(path: Path) -> None:
    assert_agree(path.read_bytes())
    fast, _ = verdicts(path.read_bytes())
    if path.name.startswith("valid--"):
        assert fast != "refused", "a valid example takes the fast path"


@pytest.mark.parametrize("event_type", sorted(INPUT_EVENTS))
def test_typed_fields_are_the_schema_properties(event_type: str) -> None:
    schema = load_schema(INPUT_EVENTS[event_type][1])
    info = msgspec.inspect.type_info(wire.WIRE_TYPES[event_type])
    assert isinstance(info, msgspec.inspect.StructType)
    assert {f.name for f in info.fields} == set(schema["properties"]) - {"type"}
    required = {f.name for f in info.fields if f.required}
    assert required == set(schema["required"]) - {"type"}


# Values that sit on either side of the schema's limits.
edge = st.sampled_from(
    [
        None,
        "",
        " ",
        "a b",
        "x" * 128,
        "x" * 129,
        "x" * 65,
        "x" * 257,
        "x" * 513,
        "abc\n",
        "é",
        "a\u00a0b",
        "a\u2028b",
        "a\u3000b",
        "a\x1cb",
        "a\tb",
        "USD",
        "usd",
        "EURO",
        0,
        -1,
        1,
        100_000,
        100_001,
        10**12,
        10**12 + 1,
        3650,
        3651,
        1.0,
        0.5,
        True,
        False,
        [],
        {},
        {"amount_minor": 1, "currency": "USD"},
        {"amount_minor": 1, "currency": "USD", "x": 1},
        {"amount_minor": -1, "currency": "USD"},
        [{"sku": "a", "category": "c", "quantity": 1, "unit_price_minor": 0}],
        [{"sku": "a", "category": "", "quantity": 1, "unit_price_minor": 0}],
        [{"sku": "a", "category": "c", "quantity": 0, "unit_price_minor": 0, "accessory": 1}],
        "card",
        "cash_on_delivery",
        "cancelled",
        "buyer",
        "search",
        "platform",
        "erase",
        "Asia/Jakarta",
        "Asia Jakarta",
        "0" * 64,
        "0" * 63,
        "A" * 64,
        "2024-06-01T10:00:00Z",
        "2024-06-01T10:00:00.123456+07:00",
        "2024-06-01T10:00:00.1234567Z",
        "2024-06-01t10:00:00z",
        "2024-06-01 10:00:00Z",
        "2024-06-01T10:00Z",
        "2024-06-01T10:00:00+0700",
        "2024-06-01T10:00:00",
        "2024-02-30T10:00:00Z",
        "2024-06-01T24:00:00Z",
        "1969-12-31T23:59:59-01:00",
        "1970-01-01T00:30:00+01:00",
        "2199-12-31T23:59:59-01:00",
        "2199-12-31T23:59:59Z",
        "9999-12-31T23:59:59Z",
    ]
)
field_names = st.sampled_from(
    sorted({name for t in TEMPLATES for name in t} | {"cancelled_by", "status", "extra", "items"})
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    body = dict(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(field_names)
        if draw(st.integers(0, 4)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(edge)
    return orjson.dumps(body)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(bodies())
def test_mutated_events_get_the_same_verdict_from_both(value: bytes) -> None:
    assert_agree(value)


WHITESPACE = (" a", "a b", "a\tb", "a\n", "a\u00a0b", "a\u2028b", "a\u3000b", "a\x1fb")


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: str(t["type"]))
def test_whitespace_in_any_identifier_is_refused_by_both(template: dict[str, Any]) -> None:
    """The typed decoder looks for it itself, and only in bytes that could hold any."""
    checks = wire._SPACE_CHECKS[wire.WIRE_TYPES[template["type"]]]
    names = [name for name, inner in checks if inner is None]
    assert names or template["type"] == "watermark"
    for name in names:
        for spaced in WHITESPACE:
            fast, checked = verdicts(orjson.dumps(template | {name: spaced}))
            assert (fast, checked) == ("refused", "schema_violation"), (name, spaced)
    if template.get("items"):
        for spaced in WHITESPACE:
            items = [template["items"][0] | {"sku": spaced}]
            fast, checked = verdicts(orjson.dumps(template | {"items": items}))
            assert (fast, checked) == ("refused", "schema_violation"), spaced


BAD_TIMES = (
    "2024-06-01 10:00:00Z",
    "2024-06-01T10:00:00",
    "2024-06-01T10:00:00+0700",
    "1969-12-31T23:59:59Z",
    "2024-06-01T10:00:00Z\n",
    "2024-06-01T10:00:00.1234567Z",
)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: str(t["type"]))
def test_a_bad_time_in_any_timestamp_field_is_refused_by_both(template: dict[str, Any]) -> None:
    """The typed decoder matches the timestamp pattern itself, in every field that has it."""
    info = msgspec.inspect.type_info(wire.WIRE_TYPES[template["type"]])
    assert isinstance(info, msgspec.inspect.StructType)
    names = [
        f.name
        for f in info.fields
        for kind in (f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,))
        if isinstance(kind, msgspec.inspect.Metadata) and wire._TIMESTAMP in (kind.extra or {})
    ]
    assert "occurred_at" in names
    for name in names:
        for bad in BAD_TIMES:
            fast, checked = verdicts(orjson.dumps(template | {name: bad}))
            assert fast == "refused" and isinstance(checked, str), (name, bad, checked)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: str(t["type"]))
def test_spaces_outside_identifiers_keep_the_fast_path(template: dict[str, Any]) -> None:
    """JSON written with spaces between its tokens, escapes or non-ASCII text elsewhere is
    read as its compact form is."""
    compact = wire.decode(orjson.dumps(template))
    assert wire.decode(json.dumps(template, indent=2).encode()) == compact
    assert wire.decode(json.dumps(template, ensure_ascii=True).encode()) == compact


def test_the_fast_path_is_taken_by_valid_events() -> None:
    """Without this the agreement above would hold with a decoder that refuses everything."""
    for template in TEMPLATES:
        assert not isinstance(wire.decode(orjson.dumps(template)), str)


def test_an_integer_written_as_a_whole_float_is_read_as_the_integer() -> None:
    """JSON Schema accepts 2.0 where an integer is meant: the record has the int 2."""
    example = SCHEMA_DIR / "examples" / "checkout_confirmed.v1" / "valid--minimal-card.json"
    body = json.loads(example.read_text())

    def decoded() -> Any:
        key = body["customer_id"].encode()
        return codec.decode_input(orjson.dumps(body), key, ALL_TYPES, 1 << 20)

    expected = decoded()
    body["total"]["amount_minor"] = float(body["total"]["amount_minor"])
    record = decoded()
    assert record == expected
    assert type(record.total.amount_minor) is int
    body["total"]["amount_minor"] += 0.5
    with pytest.raises(InputRejected, match="integer"):
        decoded()
