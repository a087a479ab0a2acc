"""Admin commands are applied only when signed, fresh and new; erasure leaves nothing behind."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import msgspec
import orjson
import pytest

import hitrun.agents.customer as customer
from hitrun.schemas import compiled_validator
from hitrun.streams.auth import command_signature, sign_command
from hitrun.streams.ingest import RawMessage
from hitrun.streams.partitioning import partition_for_key
from tests.unit.agent_shell import (
    SETTINGS,
    START,
    Sink,
    checkout,
    keyed,
    run_batch,
    same_partition_as,
    stored,
)

KEY = b"the-workers-admin-key"
TTL = timedelta(minutes=15)


@pytest.fixture(autouse=True)
def admin_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    rules = dataclasses.replace(customer.ingest_rules, admin_key=KEY, admin_ttl=TTL)
    monkeypatch.setattr(customer, "ingest_rules", rules)
    yield


def command(customer_id: str, action: str = "blacklist", minutes: int = 0, **extra: Any) -> dict:
    body = {
        "type": "admin_action_requested",
        "event_id": f"adm-{customer_id}-{action}-{minutes}",
        "customer_id": customer_id,
        "shop_id": "shop-1",
        "action": action,
        "reason": "chargeback fraud",
        **extra,
    }
    return sign_command(KEY, body, "alice", START + timedelta(minutes=minutes), TTL)


def on_admin(body: dict, topic: str | None = None, partition: int | None = None) -> RawMessage:
    msg = keyed(topic or SETTINGS.topic_admin, body["customer_id"], body)
    return msg if partition is None else msgspec.structs.replace(msg, partition=partition)


def blacklisted(sink: Sink) -> list[dict]:
    return [
        orjson.loads(r.value)
        for r in sink.records
        if r.topic == SETTINGS.topic_blacklist and r.value is not None
    ]


def refusals(sink: Sink) -> list[tuple[str, str]]:
    return [(d["reason"], d["detail"]) for d in sink.letters()]


def test_a_signed_command_is_applied_with_its_signer_as_actor_and_the_note(sink: Sink) -> None:
    run_batch(on_admin(command("cust-a", note="case 77, called the bank")))
    [alert] = blacklisted(sink)
    assert alert["actor"] == "alice" and alert["note"] == "case 77, called the bank"
    compiled_validator("customer_blacklisted.v1")(alert)
    assert stored("cust-a").unpaid.listings["shop-1"].actor == "alice"


@pytest.mark.parametrize(
    ("forge", "why"),
    [
        (lambda c: {k: v for k, v in c.items() if k not in ("signature",)}, "unsigned"),
        (
            lambda c: (
                {k: v for k, v in c.items() if k not in ("signature", "signer", "expires_at")}
                | {"actor": "nobody"}
            ),
            "unsigned",
        ),
        (lambda c: c | {"duration_days": 3650}, "bad signature"),
        (lambda c: c | {"signature": "0" * 64}, "bad signature"),
        (lambda c: sign_command(b"a guessed key", c, "alice", START, TTL), "bad signature"),
        (
            lambda c: (
                (forged := c | {"actor": "ceo@company"})
                | {"signature": command_signature(KEY, forged)}
            ),
            "actor is not its signer",
        ),
        (
            lambda c: (
                (forged := c | {"expires_at": (START + timedelta(days=3650)).isoformat()})
                | {"signature": command_signature(KEY, forged)}
            ),
            "HITRUN_ADMIN_COMMAND_TTL",
        ),
    ],
)
def test_an_unsigned_forged_or_overlong_command_is_refused_and_changes_nothing(
    sink: Sink, forge: Any, why: str
) -> None:
    run_batch(on_admin(forge(command("cust-b"))))
    [(reason, detail)] = refusals(sink)
    assert reason == "unauthenticated" and why in detail
    assert blacklisted(sink) == [] and stored("cust-b") is None


def test_a_worker_without_the_key_applies_no_command(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        customer, "ingest_rules", dataclasses.replace(customer.ingest_rules, admin_key=None)
    )
    run_batch(on_admin(command("cust-c")))
    assert [r for r, _ in refusals(sink)] == ["unauthenticated"] and stored("cust-c") is None


def test_a_replayed_command_is_refused(sink: Sink) -> None:
    good = command("cust-d", "unblacklist")
    run_batch(on_admin(command("cust-d", "blacklist")), on_admin(good))
    run_batch(on_admin(command("cust-d", "blacklist", minutes=1)))
    sink.records.clear()
    run_batch(on_admin(good))  # someone who read the admin topic writes it again
    [(reason, detail)] = refusals(sink)
    assert reason == "unauthenticated" and "replayed" in detail
    assert "shop-1" in stored("cust-d").unpaid.listings


def test_an_expired_command_is_refused(sink: Sink) -> None:
    customer_id = "cust-e"
    late_copy = command(customer_id, minutes=0)
    # The partition's clock moves 20 minutes on (another customer's checkout).
    run_batch(checkout(same_partition_as(customer_id), "o-e", minutes=20))
    run_batch(on_admin(late_copy))
    [(reason, detail)] = refusals(sink)
    assert reason == "unauthenticated" and "expired" in detail
    assert stored(customer_id) is None


def test_the_reroute_topic_takes_shop_events_only(sink: Sink) -> None:
    body = command("cust-f")
    home = partition_for_key(b"cust-f", SETTINGS.partitions)
    run_batch(on_admin(body, topic=SETTINGS.reroute_topic, partition=home))
    assert [r for r, _ in refusals(sink)] == ["wrong_topic"]
    assert stored("cust-f") is None


def test_a_command_in_the_wrong_partition_is_not_rerouted(sink: Sink) -> None:
    home = partition_for_key(b"cust-g", SETTINGS.partitions)
    run_batch(on_admin(command("cust-g"), partition=(home + 1) % SETTINGS.partitions))
    assert [r for r, _ in refusals(sink)] == ["misrouted"]
    assert not [r for r in sink.records if r.topic == SETTINGS.reroute_topic]


def test_erasure_removes_state_status_and_timers_and_says_who_asked(sink: Sink) -> None:
    customer_id = "cust-h"
    run_batch(checkout(customer_id, "o-h1"), on_admin(command(customer_id)))
    assert stored(customer_id) is not None
    partition = customer.timers.of(partition_for_key(customer_id.encode(), SETTINGS.partitions))
    assert customer_id in partition.index._latest
    sink.records.clear()
    run_batch(on_admin(command(customer_id, "erase", minutes=1, shop_id="platform")))
    assert stored(customer_id) is None
    assert customer_id not in partition.index._latest
    by_topic = {(r.topic, r.key): r.value for r in sink.records}
    key = customer_id.encode()
    assert by_topic[(customer.changelog_topic_name, key)] is None  # state tombstone
    assert by_topic[(SETTINGS.topic_blacklist_status, key)] is None  # status tombstone
    erased = orjson.loads(by_topic[(SETTINGS.topic_erasures, key)])
    compiled_validator("customer_erased.v1")(erased)
    assert erased["requested_by"] == "alice" and erased["customer_id"] == customer_id
    assert "chargeback" not in str(erased)  # the reason is the operator's text, not recorded
    assert refusals(sink) == []
