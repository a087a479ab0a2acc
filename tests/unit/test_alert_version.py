"""HITRUN_ALERT_VERSION: what a later alert schema added reaches only consumers that read it."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

import hitrun.agents.customer as customer
from hitrun.agents.alerts import to_alert
from hitrun.agents.effects import EndedListing, Unblacklist
from hitrun.schemas.registry import ALERT_TYPES, fields_of
from hitrun.streams.config import Settings
from tests.unit.agent_shell import SETTINGS, START, Sink
from tests.unit.test_contract import reference_validator

ENDED = Unblacklist(
    customer_id="av-1",
    scope="shop-1",
    at=START + timedelta(days=1),
    cause="strike_reversed",
    actor="hitrun",
    reason="a strike was reversed",
    ended=EndedListing(START, START + timedelta(days=90), 1, ("o-1", "o-2", "o-3")),
    standing=2,
    threshold=3,
)


def published(sink: Sink) -> dict[str, object]:
    (record,) = [r for r in sink.records if r.topic == SETTINGS.topic_blacklist]
    assert record.value is not None
    body: dict[str, object] = orjson.loads(record.value)
    return body


def test_an_unblacklisting_carries_the_blacklisting_it_ends(sink: Sink) -> None:
    alert = to_alert(ENDED)
    assert alert is not None
    customer.queue_alert("av-1", alert)
    body = published(sink)
    reference_validator("customer_unblacklisted.v2").validate(body)
    assert body["blacklisting"] == {
        "since": START.isoformat(),
        "until": (START + timedelta(days=90)).isoformat(),
        "offence": 1,
        "order_ids": ["o-1", "o-2", "o-3"],
    }
    assert body["strikes_standing"] == {"count": 2, "threshold": 3}


def test_version_1_leaves_out_what_later_versions_added(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_1 = {kind: fields_of(f"{kind}.v1") for kind in ALERT_TYPES}
    monkeypatch.setattr(customer, "V1_FIELDS", version_1)
    alert = to_alert(ENDED)
    assert alert is not None
    customer.queue_alert("av-1", alert)
    body = published(sink)
    reference_validator("customer_unblacklisted.v1").validate(body)
    assert body["alert_id"] == alert.body["alert_id"]
    assert "blacklisting" not in body and "strikes_standing" not in body


def test_the_setting_takes_latest_or_1_only() -> None:
    assert Settings.from_env({}).alert_version == "latest"
    assert Settings.from_env({"HITRUN_ALERT_VERSION": "1"}).alert_version == "1"
    with pytest.raises(ValueError):
        Settings.from_env({"HITRUN_ALERT_VERSION": "2"})
