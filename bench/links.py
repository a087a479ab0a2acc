"""How well linked accounts find evaders, and how many innocents they flag, on simulated traffic.

Simulated shop traffic with hashed identifiers (`TrafficShape(identities=True)`):
evaders (three unpaid orders, a blacklisting, then back under a new account id
with some identifiers reused, `EVADER_REUSE`) and innocents, some of whom order
from shared devices used by many strangers. The traffic goes through the real
broker and two live workers; the link alerts are scored against the
generator's ground truth (which accounts are one person's).

    python -m bench.links [--messages N --seed N --bootstrap HOST:PORT]

The workers inherit the environment: `HITRUN_LINK_STRONG_KINDS=...` and the
other link settings are measured by setting them.

Precision and recall are of account pairs: a pair is predicted when the
workers' link alerts leave it linked at the end, true when both accounts are
one person's. Innocents are every account but an evader's returning one; an
innocent is flagged when it got a `linked_account_flagged` alert.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson

from hitrun.agents.identity import LinkPolicy
from hitrun.dev import chaos
from hitrun.streams.config import Settings
from hitrun.streams.publisher import Mark
from hitrun.streams.simulate import GroundTruth, SimMessage, TrafficShape, generate

Pair = tuple[str, str]


@dataclass(frozen=True)
class LinkScores:
    accounts: int  # accounts with at least one checkout in the traffic
    true_pairs: int
    # True pairs whose accounts share, in the traffic, identifiers that make a strong link
    # (none seen on more than K accounts).
    linkable_pairs: int
    predicted_pairs: int
    correct_pairs: int
    ever_linked_pairs: int  # linked at some point, unlinked later included
    returned: int  # evaders' returning accounts
    returned_flagged: int
    innocents: int
    innocents_flagged: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    def lines(self) -> list[str]:
        share = self.innocents_flagged / self.innocents if self.innocents else 0.0
        return [
            f"accounts {self.accounts:,}; true pairs (one person) {self.true_pairs}",
            f"links at the end {self.predicted_pairs}, of them right {self.correct_pairs}: "
            f"precision {self.precision:.3f}, recall {self.recall:.3f} "
            f"({self.ever_linked_pairs} pairs linked at some point)",
            f"true pairs sharing identifiers that link: {self.linkable_pairs} "
            f"(recall of those {self.correct_pairs / max(self.linkable_pairs, 1):.3f})",
            f"evaders' returning accounts flagged: {self.returned_flagged} of {self.returned}",
            f"innocents flagged: {self.innocents_flagged} of {self.innocents:,} ({share:.3%})",
        ]


def _pair(a: str, b: str) -> Pair:
    return (a, b) if a < b else (b, a)


def score(
    truth: GroundTruth,
    traffic: Iterable[SimMessage | Mark],
    alerts: Iterable[dict[str, Any]],
    policy: LinkPolicy | None = None,
) -> LinkScores:
    """Score the link alerts of a run against the ground truth of its traffic."""
    policy = policy or LinkPolicy()
    accounts: set[str] = set()
    shown: dict[str, set[tuple[str, str]]] = {}  # account -> (kind, hash) in its events
    for m in traffic:
        if not isinstance(m, SimMessage) or m.customer_id not in truth.persons:
            continue
        if m.role == "checkouts":
            accounts.add(m.customer_id)
        if m.role in ("checkouts", "payments") and not m.label.startswith("malformed"):
            given = orjson.loads(m.value).get("identifiers") or {}
            shown.setdefault(m.customer_id, set()).update(given.items())
    by_person: dict[str, list[str]] = {}
    for account in sorted(accounts):
        by_person.setdefault(truth.persons[account], []).append(account)
    true_pairs = {_pair(a, b) for group in by_person.values() for a, b in combinations(group, 2)}
    users: dict[tuple[str, str], int] = {}
    for identifiers in shown.values():
        for identifier in identifiers:
            users[identifier] = users.get(identifier, 0) + 1
    linkable = set()
    for a, b in true_pairs:
        shared = shown.get(a, set()) & shown.get(b, set())
        kinds = {kind for kind, value in shared if users[(kind, value)] <= policy.common_after}
        if kinds & policy.strong_kinds or len(kinds) >= policy.min_kinds:
            linkable.add((a, b))
    # The last word on each (customer, other): a customer's alerts are in one partition,
    # read in the order they were written.
    standing: dict[tuple[str, str], bool] = {}
    ever: set[Pair] = set()
    flagged: set[str] = set()
    for alert in alerts:
        kind = alert["type"]
        if kind == "linked_account_flagged":
            flagged.add(alert["customer_id"])
            continue
        if kind not in ("account_linked", "account_unlinked"):
            continue
        key = (alert["customer_id"], alert["linked_customer_id"])
        ever.add(_pair(*key))
        standing[key] = kind == "account_linked"
    predicted = {_pair(*key) for key, linked in standing.items() if linked}
    returned = {a for a in accounts if truth.customers[a] == "evader_returned"}
    innocents = accounts - returned
    return LinkScores(
        accounts=len(accounts),
        true_pairs=len(true_pairs),
        linkable_pairs=len(linkable),
        predicted_pairs=len(predicted),
        correct_pairs=len(predicted & true_pairs),
        ever_linked_pairs=len(ever),
        returned=len(returned),
        returned_flagged=len(returned & flagged),
        innocents=len(innocents),
        innocents_flagged=len(innocents & flagged),
    )


# About how many messages a simulated customer brings, on average.
MESSAGES_PER_CUSTOMER = 3.5


def traffic_of(messages: int, seed: int) -> tuple[GroundTruth, list[SimMessage | Mark]]:
    """Customers arriving over half a year with identities, evaders and shared devices, up to
    a watermark a minute ago (later events of theirs are left out, as not yet happened)."""
    now = datetime.now(UTC).replace(microsecond=0)
    end = now - timedelta(minutes=1)
    shape = TrafficShape(
        seed=seed,
        start=now - timedelta(days=270),
        customer_gap=timedelta(days=180) * MESSAGES_PER_CUSTOMER / messages,
        malformed_ratio=0.0,
        identities=True,
        evaders=0.03,
        shared_device_users=0.1,
    )
    truth = GroundTruth()
    traffic: list[SimMessage | Mark] = [
        m for m in generate(shape, messages, truth) if m.occurred_at < end
    ]
    traffic.append(Mark(end, "links"))
    return truth, traffic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.links", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=None, help="an existing broker")
    args = parser.parse_args(argv)
    truth, traffic = traffic_of(args.messages, args.seed)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hitrun-links-")))
        bootstrap = stack.enter_context(chaos.broker(workdir, args.bootstrap))
        outputs, _ = chaos.run(bootstrap, workdir, "live", traffic, "links")
    alerts = [orjson.loads(copies[0]) for copies in outputs.alerts.values()]
    # The workers and the scoring read the same HITRUN_LINK_* settings.
    scores = score(truth, traffic, alerts, Settings.from_env().link_policy())
    print(f"bench-links: {args.messages:,} messages, seed {args.seed}, two live workers")
    for line in scores.lines():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
