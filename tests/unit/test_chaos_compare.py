"""The chaos comparison notices every kind of difference, so a chaos test cannot pass vacuously."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiokafka import TopicPartition

from hitrun.dev.chaos import Outputs, Quiet, compare, keep_logs


def alert(alert_id: str, order: str = "o1", kind: str = "order_expired") -> bytes:
    return orjson.dumps(
        {"alert_id": alert_id, "type": kind, "customer_id": "c1", "order_id": order}
    )


def outputs(*alerts: bytes, status: dict[bytes, bytes | None] | None = None) -> Outputs:
    out = Outputs(inputs=10, status=status or {})
    for body in alerts:
        out.alerts.setdefault(orjson.loads(body)["alert_id"], []).append(body)
    return out


def test_equal_runs_compare_equal_and_duplicates_with_the_same_body_are_allowed() -> None:
    clean = outputs(alert("a"), alert("b", "o2"))
    chaos = outputs(alert("a"), alert("b", "o2"), alert("b", "o2"))
    report = compare("replay", clean, chaos, kills=5, outages=0)
    assert report.equal
    assert report.duplicated == 1
    assert report.clean_alerts == 2
    assert report.alert_types == {"order_expired": 2}


def test_a_lost_alert_is_reported() -> None:
    report = compare("live", outputs(alert("a"), alert("b")), outputs(alert("a")), 5, 0)
    assert report.lost == ["b"] and not report.equal
    assert any(e.startswith("lost order_expired") for e in report.examples)


def test_an_extra_alert_is_reported() -> None:
    report = compare("live", outputs(alert("a")), outputs(alert("a"), alert("x")), 5, 0)
    assert report.extra == ["x"] and not report.equal


def test_a_differing_body_is_reported_even_among_duplicates() -> None:
    clean = outputs(alert("a", "o1"))
    chaos = outputs(alert("a", "o1"), alert("a", "o9"))
    report = compare("live", clean, chaos, 5, 0)
    assert report.differing == ["a"] and not report.equal


def test_a_different_final_blacklist_status_is_reported() -> None:
    clean = outputs(alert("a"), status={b"c1": b'{"listings":[1]}'})
    chaos = outputs(alert("a"), status={b"c1": None})
    assert compare("outage", clean, chaos, 0, 1).status_differing == 1


def refuse(out: Outputs, topic: str, partition: int, offset: int, reason: str, value: str) -> None:
    """Record a dead letter as read_outputs does."""
    out.dead_letters.add((topic, partition, offset, reason))
    out.reasons[reason] += 1
    out.refused[(topic, "a2V5", value, reason)] += 1


def test_a_lost_dead_letter_is_reported_even_when_every_alert_is_there() -> None:
    clean, chaos = outputs(alert("a")), outputs(alert("a"))
    for out in (clean, chaos):
        refuse(out, ".checkouts", 1, 17, "not_json", "e30=")
    refuse(clean, ".checkouts", 2, 40, "schema_violation", "e3h9")
    report = compare("outage", clean, chaos, kills=0, outages=1)
    assert report.dead_letters_differing == 1 and not report.equal
    assert any(e.startswith("dead letters: clean") for e in report.examples)


def test_the_same_message_refused_where_another_partitioner_put_it_is_the_same_letter() -> None:
    clean, chaos = outputs(alert("a")), outputs(alert("a"))
    refuse(clean, ".payments", 1, 17, "not_json", "e30=")
    refuse(chaos, ".payments", 3, 5, "not_json", "e30=")
    assert compare("live", clean, chaos, kills=5, outages=0).equal
    refuse(chaos, ".payments", 3, 6, "not_json", "e30=")  # refused twice: two letters
    assert compare("live", clean, chaos, kills=5, outages=0).dead_letters_differing == 1


def link(alert_id: str, kind: str, customer: str, other: str, **extra: str) -> bytes:
    body = {"alert_id": alert_id, "type": kind, "customer_id": customer}
    return orjson.dumps(body | {"linked_customer_id": other} | extra)


def listing(alert_id: str, kind: str, customer: str, reason: str) -> bytes:
    body = {"alert_id": alert_id, "type": kind, "customer_id": customer, "reason": reason}
    return orjson.dumps(body)


def test_pairs_linked_through_an_identifier_that_turned_common_are_counted_and_compared() -> None:
    # In one run the first K customers of a device included c1 and c1r (linked, flagged,
    # blacklisted through the link, then all taken back); in the other not. The identity
    # stage links the same first K in every run: that is a difference like any other.
    crossed = [
        link("l1", "account_linked", "c1r", "c1"),
        link("f1", "linked_account_flagged", "c1r", "c1"),
        link("u1", "account_unlinked", "c1r", "c1", cause="identifier_common"),
        link("u2", "account_unlinked", "c1", "c1r", cause="identifier_common"),
        listing("b1", "customer_blacklisted", "c1r", "linked to account c1, on this blacklist"),
        listing("b2", "customer_unblacklisted", "c1r", "the blacklisting of linked account c1"),
    ]
    report = compare("live", outputs(alert("a")), outputs(alert("a"), *crossed), 5, 0)
    assert not report.equal and report.crossed == 1
    assert report.extra == ["b1", "b2", "f1", "l1", "u1", "u2"]
    # In both runs: equal, and still counted.
    both = outputs(alert("a"), *crossed)
    report = compare("live", both, outputs(alert("a"), *crossed), 5, 0)
    assert report.equal and report.crossed == 1


def test_a_failed_run_keeps_the_workers_logs(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    (workdir / "kafka").mkdir(parents=True)
    (workdir / "chaos-kills-1-0.log").write_text("worker 0")
    (workdir / "chaos-kills-1-1.log").write_text("worker 1")
    (workdir / "kafka" / "server.log").write_text("broker")
    kept = keep_logs(workdir, tmp_path / "kept")
    assert sorted(p.name for p in kept.iterdir()) == ["chaos-kills-1-0.log", "chaos-kills-1-1.log"]
    assert (kept / "chaos-kills-1-1.log").read_text() == "worker 1"


def test_a_run_is_done_once_quiet_again_after_input_came_in_with_the_outputs_unchanged() -> None:
    quiet = Quiet(seconds=3)
    ends = {TopicPartition("alerts", 0): 40}
    assert not quiet.done(0, ends, now=0)
    # A worker writes a progress mark after the last alert: input, and nothing more out.
    assert not quiet.done(1, None, now=1)
    assert not quiet.done(0, dict(ends), now=2)
    assert not quiet.done(0, dict(ends), now=4)
    assert quiet.done(0, dict(ends), now=5.5)
    # Outputs that still grow are waited for.
    assert not quiet.done(0, {TopicPartition("alerts", 0): 41}, now=9)
    assert quiet.done(0, {TopicPartition("alerts", 0): 41}, now=12.5)
