"""Properties of the unpaid core over random customer histories (hypothesis)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from hitrun.agents.effects import CloseOrder, Effect, RecordStrike, ReverseStrike, SendReminder
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.schemas.records import InputEvent
from tests.unit.events import T0, as_version_1, checkout, payment, status
from tests.unit.timeline import play

METHODS = ["card", "e_wallet", "bank_transfer", "virtual_account", "convenience_store"]
ZONES = [None, "Asia/Jakarta", "Asia/Manila", "Europe/Berlin"]
END = T0 + timedelta(days=400)
POLICY = UnpaidPolicy()


@st.composite
def histories(draw: st.DrawFn) -> list[InputEvent]:
    """One customer's orders: a checkout each, maybe payments, maybe a cancellation."""
    events: list[InputEvent] = []
    for n in range(draw(st.integers(1, 8))):
        oid = f"o{n}"
        start = T0 + timedelta(minutes=draw(st.integers(0, 200 * 24 * 60)))
        amount = draw(st.integers(1, 5)) * 1000
        tz = draw(st.sampled_from(ZONES))
        events.append(
            checkout(oid, start, method=draw(st.sampled_from(METHODS)), amount=amount, tz=tz)
        )
        for _ in range(draw(st.integers(0, 2))):
            offset = timedelta(minutes=draw(st.integers(-30, 3 * 24 * 60)))
            share = draw(st.sampled_from([amount, amount // 2]))
            events.append(payment(oid, start + offset, amount=share))
        if draw(st.booleans()):
            offset = timedelta(minutes=draw(st.integers(1, 3 * 24 * 60)))
            by = draw(st.sampled_from(["buyer", "seller", "system", "logistics"]))
            events.append(status(oid, start + offset, "cancelled", by=by))
    return events


def _run(events: list[InputEvent]) -> list[Effect]:
    effects, _ = play(events, until=END, policies=Policies(POLICY))
    return effects


@settings(max_examples=150, deadline=None)
@given(histories())
def test_every_checkout_ends_exactly_once(events: list[InputEvent]) -> None:
    effects = _run(events)
    closes = Counter(e.order_id for e in effects if isinstance(e, CloseOrder))
    checked_out = {e.order_id for e in events if e.type == "checkout_confirmed"}
    assert set(closes) == checked_out
    assert all(count == 1 for count in closes.values())


@settings(max_examples=150, deadline=None)
@given(histories())
def test_no_reminder_for_an_order_already_paid_cancelled_or_expired(
    events: list[InputEvent],
) -> None:
    closed_at: dict[str, object] = {}
    for effect in _run(events):
        if isinstance(effect, CloseOrder):
            closed_at[effect.order_id] = effect.at
        elif isinstance(effect, SendReminder):
            for line in effect.orders:
                assert line.order_id not in closed_at
                assert effect.at < line.deadline


@settings(max_examples=150, deadline=None)
@given(histories())
def test_no_reminder_in_the_customers_quiet_hours(events: list[InputEvent]) -> None:
    for effect in _run(events):
        if isinstance(effect, SendReminder) and effect.time_zone is not None:
            local = effect.at.astimezone(ZoneInfo(effect.time_zone)).time()
            assert POLICY.quiet_end is not None and POLICY.quiet_start is not None
            assert POLICY.quiet_end <= local < POLICY.quiet_start


@settings(max_examples=150, deadline=None)
@given(histories())
def test_strike_count_equals_expired_unreversed_orders_in_the_window(
    events: list[InputEvent],
) -> None:
    standing: dict[str, object] = {}
    for effect in _run(events):
        if isinstance(effect, RecordStrike):
            standing[effect.order_id] = effect.at
            in_window = [t for t in standing.values() if effect.at - POLICY.strike_window < t]  # type: ignore[operator]
            assert effect.strike_count == len(in_window)
        elif isinstance(effect, ReverseStrike):
            standing.pop(effect.order_id)
            in_window = [t for t in standing.values() if effect.at - POLICY.strike_window < t]  # type: ignore[operator]
            assert effect.strike_count == len(in_window)


@settings(max_examples=100, deadline=None)
@given(histories())
def test_the_same_input_in_the_same_order_gives_the_same_output(events: list[InputEvent]) -> None:
    assert _run(events) == _run(list(events))


@settings(max_examples=100, deadline=None)
@given(histories())
def test_state_is_empty_once_everything_has_ended(events: list[InputEvent]) -> None:
    _, state = play(events, until=END + timedelta(days=800), policies=Policies(POLICY))
    assert state.is_empty()


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(0, 400))
def test_state_survives_the_changelog_codec_at_any_moment(
    events: list[InputEvent], cut_days: int
) -> None:
    from hitrun.agents.state import CustomerState, decode_state, encode_state

    cut = T0 + timedelta(days=cut_days)
    before = [e for e in events if e.occurred_at <= cut]
    after = [e for e in events if e.occurred_at > cut]
    straight, _ = play(events, until=END, policies=Policies(POLICY))
    first, state = play(before, until=cut, policies=Policies(POLICY))
    restored = decode_state(encode_state(CustomerState(state))).unpaid
    assert restored == state
    # As the revision before the versioned codec wrote it: a changelog being upgraded.
    assert decode_state(as_version_1(CustomerState(state))).unpaid == state
    rest, _ = play(after, until=END, policies=Policies(POLICY), state=restored)
    assert first + rest == straight


@settings(max_examples=60, deadline=None)
@given(histories())
def test_every_alert_validates_against_its_schema_and_has_a_unique_id(
    events: list[InputEvent],
) -> None:
    from hitrun.agents.alerts import to_alert
    from hitrun.schemas.registry import fields_of, latest_schema
    from tests.unit.test_contract import reference_validator

    policies = Policies(UnpaidPolicy(strike_threshold=2))
    effects, _ = play(events, until=END, policies=policies)
    alerts = [a for a in map(to_alert, effects) if a is not None]
    for alert in alerts:
        reference_validator(latest_schema(alert.type)).validate(alert.body)
        # What a worker with HITRUN_ALERT_VERSION=1 publishes of it is a v1 alert.
        fields = fields_of(f"{alert.type}.v1")
        first = {name: value for name, value in alert.body.items() if name in fields}
        reference_validator(f"{alert.type}.v1").validate(first)
        assert alert.key == alert.body["customer_id"]
    ids = [a.body["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))
