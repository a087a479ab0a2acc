"""How well the first-purchase risk score tells one-time from repeat buyers in simulated traffic.

Offline and deterministic: no Kafka. The labels are the generator's ground
truth, so the AUC measures how well the score recovers the signals the
generator plants, not how well it predicts real customers.

    python -m bench.risk_auc [--seed N --count N]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from hitrun.agents.risk import FACTORS, OrderTraits, RiskWeights, assess, traits_of
from hitrun.schemas.records import CheckoutConfirmed
from hitrun.streams.simulate import GroundTruth, TrafficShape, generate

# Ground-truth kinds by what the customer does after the first purchase; the
# kinds that never buy (never_pays, cod_refuser, inquiry_only) are left out.
BUYS_ONCE = frozenset({"one_time_buyer", "pays_promptly", "pays_after_reminder"})
BUYS_AGAIN = frozenset({"loyal_repeat_buyer"})
FIRST_DAY = timedelta(hours=24)
PAID_STATUSES = frozenset({"paid", "completed"})


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The AUC of the score for "bought once" (positive) against "bought again", and its inputs."""

    seed: int
    count: int
    auc: float
    once: int  # buy-once customers whose first purchase is in the traffic
    again: int  # repeat buyers whose first purchase is in the traffic
    unobserved: int  # buying customers whose first purchase falls after the last message
    # factor -> (share of first purchases with it among buy-once, among repeat buyers)
    rates: dict[str, tuple[float, float]]
    mean_score: tuple[float, float]  # (buy-once, repeat buyers)


@dataclass
class _Customer:
    checkouts: dict[str, OrderTraits] = field(default_factory=dict)
    paid: dict[str, datetime] = field(default_factory=dict)

    def paid_at(self, order_id: str, at: datetime) -> None:
        self.paid[order_id] = min(at, self.paid.get(order_id, at))

    def first_purchase(self) -> tuple[OrderTraits, int] | None:
        """The first paid order's traits and the customer's checkouts in the day up to its payment.

        The count is the purchased order plus the other checkouts in
        (paid - 24 h, paid], as the retention core counts it.
        """
        bought = [(at, oid) for oid, at in self.paid.items() if oid in self.checkouts]
        if not bought:
            return None
        paid, order_id = min(bought)
        others = sum(
            1
            for t in self.checkouts.values()
            if t.order_id != order_id and paid - FIRST_DAY < t.at <= paid
        )
        return self.checkouts[order_id], others + 1


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counted half.

    Computed from ranks (Mann-Whitney U over n+ * n-), tied scores sharing their mean rank.
    """
    if not positives or not negatives:
        raise ValueError("the AUC needs at least one positive and one negative")
    scored = sorted([(s, True) for s in positives] + [(s, False) for s in negatives])
    positive_rank_sum = 0.0
    start = 0
    while start < len(scored):
        end = start
        while end < len(scored) and scored[end][0] == scored[start][0]:
            end += 1
        mean_rank = (start + 1 + end) / 2  # ranks start+1 .. end
        positive_rank_sum += mean_rank * sum(1 for _, pos in scored[start:end] if pos)
        start = end
    n_pos, n_neg = len(positives), len(negatives)
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def evaluate(seed: int, count: int, weights: RiskWeights | None = None) -> Evaluation:
    """Score every buying customer's first purchase in `count` simulated messages."""
    weights = weights if weights is not None else RiskWeights()
    truth = GroundTruth()
    customers: dict[str, _Customer] = {}
    for message in generate(TrafficShape(seed=seed, malformed_ratio=0), count, truth):
        body = orjson.loads(message.value)
        customer = customers.setdefault(message.customer_id, _Customer())
        if message.role == "checkouts":
            traits = traits_of(CheckoutConfirmed.from_dict(body))
            customer.checkouts[traits.order_id] = traits
        elif (message.role == "payments" and body["status"] == "succeeded") or (
            message.role == "orders" and body["status"] in PAID_STATUSES
        ):
            customer.paid_at(body["order_id"], message.occurred_at)

    scores: dict[bool, list[float]] = {True: [], False: []}
    present: dict[bool, dict[str, int]] = {once: dict.fromkeys(FACTORS, 0) for once in scores}
    unobserved = 0
    for cid, kind in truth.customers.items():
        if kind not in BUYS_ONCE | BUYS_AGAIN:
            continue
        first = customers[cid].first_purchase() if cid in customers else None
        if first is None:
            unobserved += 1
            continue
        once = kind in BUYS_ONCE
        score, factors = assess(*first, weights)
        scores[once].append(score)
        for name in factors:
            present[once][name] += 1

    def share(n: int, once: bool) -> float:
        return n / len(scores[once]) if scores[once] else 0.0

    return Evaluation(
        seed=seed,
        count=count,
        auc=auc(scores[True], scores[False]),
        once=len(scores[True]),
        again=len(scores[False]),
        unobserved=unobserved,
        rates={
            name: (share(present[True][name], True), share(present[False][name], False))
            for name in FACTORS
        },
        mean_score=(_mean(scores[True]), _mean(scores[False])),
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def report(result: Evaluation) -> str:
    """The evaluation as text, with the per-factor table in Markdown."""
    lines = [
        f"python -m bench.risk_auc --seed {result.seed} --count {result.count}",
        f"AUC (bought once vs bought again): {result.auc:.3f}",
        f"customers: bought once {result.once}, bought again {result.again}, "
        f"first purchase after the last message {result.unobserved}",
        "",
        "| factor | bought once | bought again |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| `{name}` | {once:.1%} | {again:.1%} |" for name, (once, again) in result.rates.items()
    ]
    lines.append(f"| mean score | {result.mean_score[0]:.3f} | {result.mean_score[1]:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument(
        "--count", type=int, default=100_000, help="messages to generate (default 100000)"
    )
    args = parser.parse_args(argv)
    print(report(evaluate(args.seed, args.count)))


if __name__ == "__main__":
    main()
