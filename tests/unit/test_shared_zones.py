"""Parsed times share one timezone object per offset, and the epoch conversion agrees with
plain arithmetic in every zone: a speed-up that changes no instant and no text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitrun.agents.state import CustomerState, decode_state, encode_state
from hitrun.schemas import wire
from hitrun.streams.clock import EPOCH, from_micros, to_micros


def checkout(occurred_at: str, due: str) -> bytes:
    body = {
        "type": "checkout_confirmed",
        "event_id": f"e-{occurred_at}",
        "customer_id": "zone-c",
        "shop_id": "s",
        "occurred_at": occurred_at,
        "order_id": "o-1",
        "total": {"amount_minor": 100, "currency": "IDR"},
        "payment_method": "bank_transfer",
        "payment_due_at": due,
    }
    return msgspec.json.encode(body)


def test_times_of_one_offset_share_one_zone_object_with_stored_states(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # msgspec keeps a cache of its own offsets' objects, which other tests' hundreds of
    # offsets may have replaced since this process took one: start afresh.
    monkeypatch.setattr(wire, "_ZONES", {})
    first = wire.decode(checkout("2024-05-01T10:00:00+07:00", "2024-05-02T10:00:00+07:00"))
    second = wire.decode(checkout("2024-06-01T09:30:00.5+07:00", "2024-06-03T00:00:00+07:00"))
    zones = {
        id(t.tzinfo)
        for t in (first.occurred_at, second.occurred_at, first.payment_due_at)  # type: ignore[attr-defined]
    }
    assert len(zones) == 1
    # A state written and read back (msgspec's decoding) holds the same object.
    state = CustomerState()
    state.unpaid.seen["e"] = first.occurred_at
    stored = decode_state(encode_state(state))
    assert stored.unpaid.seen["e"].tzinfo is first.occurred_at.tzinfo
    # Nothing else changed: the instant, the offset, the text.
    assert first.occurred_at.isoformat() == "2024-05-01T10:00:00+07:00"
    assert second.occurred_at.isoformat() == "2024-06-01T09:30:00.500000+07:00"
    assert first.occurred_at == datetime(2024, 5, 1, 3, tzinfo=UTC)
    # Other offsets get their own; UTC stays UTC.
    west = wire.decode(checkout("2024-05-01T10:00:00-05:30", "2024-05-02T10:00:00Z"))
    assert west.occurred_at.utcoffset() == -timedelta(hours=5, minutes=30)
    assert west.payment_due_at.tzinfo is UTC  # type: ignore[attr-defined]


ZONES = st.one_of(
    st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m))),
    st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")]),
)


@given(st.integers(-(10**15), 7 * 10**15), ZONES)
def test_to_micros_is_plain_arithmetic_in_any_zone(micros: int, zone: timezone) -> None:
    moment = from_micros(micros).astimezone(zone)
    assert to_micros(moment) == (moment - EPOCH) // timedelta(microseconds=1) == micros
