"""What `make demo` shows: customers' stories, rates, the simulator's ground truth against
hitrun's alerts, and dead letters by reason. Pure bookkeeping and rendering, no I/O."""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from hitrun.streams.simulate import GroundTruth, SimMessage

# A story shows its last steps; older ones are folded into a leading "…".
STORY_STEPS = 6


@dataclass(frozen=True, slots=True)
class Checkout:
    order_id: str
    method: str
    amount_minor: int
    currency: str


def money(amount_minor: int, currency: str) -> str:
    """`IDR 259,000` for 25,900,000 minor units (two decimals, dropped when zero)."""
    whole, cents = divmod(amount_minor, 100)
    return f"{currency} {whole:,}" + (f".{cents:02d}" if cents else "")


def short(identifier: str) -> str:
    """`ord-1a2b3c` for `ord-1a2b3c4d5e6f7a8b`: enough to tell a customer's orders apart."""
    prefix, _, rest = identifier.partition("-")
    return f"{prefix}-{rest[:6]}" if rest and len(rest) > 8 else identifier


def _strikes(alert: Mapping[str, Any]) -> str:
    return f"strike {alert['strike']['count']}/{alert['strike']['threshold']}"


# Each alert type as a step of its customer's story. first_purchase_risk tells none:
# every first purchase has one.
STEPS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "payment_reminder": lambda a: "reminder" if a["attempt"] == 1 else f"reminder {a['attempt']}",
    "payment_recovered": lambda a: f"paid after {a['reminders_sent']} reminder(s)",
    "order_expired": lambda a: f"expired, {_strikes(a)}",
    "strike_recorded": lambda a: f"refused at the door, {_strikes(a)}",
    "strike_reversed": lambda a: "strike reversed",
    "customer_blacklisted": lambda a: f"blacklisted until {a['until'][:10]}",
    "customer_unblacklisted": lambda a: "unblacklisted",
    "single_purchase": lambda a: f"bought once, not back in {a['window_days']} days",
    "early_churn": lambda a: f"{a['purchases']} purchases, then gone {a['dormant_days']} days",
    "customer_returned": lambda a: "came back",
    "inquiry_only": lambda a: f"{a['inquiries']} inquiries, no purchase in {a['window_days']} days",
    "customer_erased": lambda a: "erased",
}


def step(alert: Mapping[str, Any]) -> str | None:
    """One alert as a step of its customer's story; None for alerts that tell no story."""
    told = STEPS.get(alert["type"])
    return None if told is None else told(alert)


class Stories:
    """Each customer's alerts as one line, with the checkouts they refer to."""

    def __init__(self, kinds: Mapping[str, str], keep: int = 5_000, orders: int = 200_000) -> None:
        self.kinds = kinds  # customer -> the simulator's kind
        self.keep = keep
        self.order_limit = orders
        self.orders: OrderedDict[str, Checkout] = OrderedDict()
        self.steps: OrderedDict[str, list[str]] = OrderedDict()  # most recently told last
        self.told: dict[str, set[str]] = {}  # customer -> orders whose checkout is in the story
        # customer -> the type of its latest outcome, the latest last
        self.shown: OrderedDict[str, str] = OrderedDict()

    def sent(self, message: SimMessage) -> None:
        """Remember a checkout the simulator published (bounded: the oldest are forgotten)."""
        if message.role != "checkouts" or message.label.startswith("malformed:"):
            return
        body = orjson.loads(message.value)
        total = body["total"]
        self.orders[body["order_id"]] = Checkout(
            body["order_id"], body["payment_method"], total["amount_minor"], total["currency"]
        )
        if len(self.orders) > self.order_limit:
            self.orders.popitem(last=False)

    def add(self, alert: Mapping[str, Any]) -> None:
        told = step(alert)
        if told is None:
            return
        customer = alert["customer_id"]
        steps = self.steps.pop(customer, [])
        self.steps[customer] = steps
        known = self.told.setdefault(customer, set())
        checkout = self.orders.get(alert.get("order_id") or "")
        if checkout is not None and checkout.order_id not in known:
            known.add(checkout.order_id)
            steps.append(
                f"checkout {short(checkout.order_id)} {checkout.method} "
                f"{money(checkout.amount_minor, checkout.currency)}"
            )
        steps.append(told)
        # A reminder is a step, not an outcome: stories come to the top on outcomes, so
        # that the many customers waiting for a deadline do not crowd out the rest.
        if alert["type"] != "payment_reminder":
            self.shown.pop(customer, None)
            self.shown[customer] = alert["type"]
        while len(self.steps) > self.keep:
            gone, _ = self.steps.popitem(last=False)
            self.told.pop(gone, None)
            self.shown.pop(gone, None)

    def latest(self, count: int) -> list[tuple[str, str, str]]:
        """The `count` stories with the latest outcomes, newest first: (customer, story,
        simulator's kind). Outcomes of one type take at most a third of the rows while
        stories ending otherwise are there to show."""
        per_outcome = max(1, -(-count // 3))
        taken: dict[str, int] = {}
        picked: list[str] = []
        for looked, customer in enumerate(reversed(self.shown)):
            if len(picked) == count or looked == 50 * count:
                break
            outcome = self.shown[customer]
            if taken.get(outcome, 0) < per_outcome:
                taken[outcome] = taken.get(outcome, 0) + 1
                picked.append(customer)
        if len(picked) < count:  # too few kinds of outcome: fill with the newest
            chosen = set(picked)
            picked += [c for c in reversed(self.shown) if c not in chosen][: count - len(picked)]
            recency = {c: n for n, c in enumerate(reversed(self.shown))}
            picked.sort(key=recency.__getitem__)
        out: list[tuple[str, str, str]] = []
        for customer in picked:
            steps = self.steps[customer]
            shown = steps[-STORY_STEPS:]
            line = " → ".join(["…", *shown] if len(steps) > len(shown) else shown)
            out.append((customer, line, self.kinds.get(customer, "?")))
        return out


@dataclass(frozen=True, slots=True)
class Expectation:
    """Customers of these simulated kinds should get this alert once `horizon` has passed."""

    label: str
    kinds: frozenset[str]
    alert: str
    horizon: timedelta


EXPECTATIONS = (
    Expectation("never pays", frozenset({"never_pays"}), "order_expired", timedelta(days=3)),
    Expectation(
        "refuses cash on delivery", frozenset({"cod_refuser"}), "strike_recorded", timedelta(days=6)
    ),
    Expectation(
        "buys once",
        frozenset({"one_time_buyer", "pays_promptly", "pays_after_reminder"}),
        "single_purchase",
        timedelta(days=92),
    ),
    Expectation("only asks", frozenset({"inquiry_only"}), "inquiry_only", timedelta(days=92)),
)


@dataclass(frozen=True, slots=True)
class Score:
    expectation: Expectation
    customers: int  # of the expected kinds, so far
    due: int  # of those, arrived more than the horizon before the stream clock
    found: int  # of those due, flagged
    flagged: int  # customers with the alert (not reversed), of any kind
    right: int  # of those flagged, of the expected kinds

    @property
    def recall(self) -> float | None:
        return self.found / self.due if self.due else None

    @property
    def precision(self) -> float | None:
        return self.right / self.flagged if self.flagged else None


class Truth:
    """The simulator's ground truth against the alerts read so far."""

    def __init__(self, facts: GroundTruth) -> None:
        self.facts = facts
        self.arrivals: list[tuple[datetime, str]] = []  # in arrival order
        self.arrived: set[str] = set()
        # alert type -> customer -> the orders it names ("" for alerts without one); a
        # strike_reversed takes its order out again: a reversed strike is no verdict.
        self.flagged: dict[str, dict[str, set[str]]] = {e.alert: {} for e in EXPECTATIONS}
        self.clock: datetime | None = None  # the latest event time of an alert

    def sent(self, message: SimMessage) -> None:
        """Note a customer's arrival: the event time of their first message."""
        customer = message.customer_id
        if message.label.startswith("malformed:") or customer in self.arrived:
            return
        self.arrived.add(customer)
        self.arrivals.append((message.occurred_at, customer))

    def add(self, alert: Mapping[str, Any]) -> None:
        at = datetime.fromisoformat(alert["occurred_at"])
        if self.clock is None or at > self.clock:
            self.clock = at
        customer, order = alert["customer_id"], alert.get("order_id") or ""
        if alert["type"] == "strike_reversed":
            for flagged in self.flagged.values():
                orders = flagged.get(customer)
                if orders is not None:
                    orders.discard(order)
                    if not orders:
                        del flagged[customer]
            return
        if alert["type"] in self.flagged:
            self.flagged[alert["type"]].setdefault(customer, set()).add(order)

    def scores(self) -> list[Score]:
        kinds = self.facts.customers
        out = []
        for e in EXPECTATIONS:
            flagged = self.flagged[e.alert]
            due_before = (
                0
                if self.clock is None
                else bisect.bisect_right(self.arrivals, (self.clock - e.horizon, "\uffff"))
            )
            customers = due = found = 0
            for n, (_, customer) in enumerate(self.arrivals):
                if kinds[customer] not in e.kinds:
                    continue
                customers += 1
                if n < due_before:
                    due += 1
                    found += customer in flagged
            right = sum(kinds.get(c) in e.kinds for c in flagged)
            out.append(Score(e, customers, due, found, len(flagged), right))
        return out


class Rate:
    """Events per second over the last few seconds, from a growing total."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()

    def update(self, total: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    @property
    def per_second(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self.samples[0], self.samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


def counters(body: bytes) -> dict[str, float]:
    """A /metrics scrape as totals: `outcome:<outcome>`, `dead:<reason>`, `alert:<type>`."""
    out: dict[str, float] = {}

    def count(key: str, value: float) -> None:
        out[key] = out.get(key, 0.0) + value

    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "hitrun_input_events_total":
                count(f"outcome:{sample.labels['outcome']}", sample.value)
            elif sample.name == "hitrun_dead_letters_total":
                count(f"dead:{sample.labels['reason']}", sample.value)
            elif sample.name == "hitrun_alerts_total":
                count(f"alert:{sample.labels['type']}", sample.value)
    return out


@dataclass
class DemoView:
    """Everything the demo shows, fed by the simulator, the alert topics and /metrics."""

    run_id: str
    seed: int
    facts: GroundTruth = field(default_factory=GroundTruth)
    published: int = 0
    alerts_read: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stories = Stories(self.facts.customers)
        self.truth = Truth(self.facts)
        self.rates = {
            name: Rate() for name in ("published", "processed", "rerouted", "alerts", "dead")
        }

    def sent(self, message: SimMessage) -> None:
        self.published += 1
        self.stories.sent(message)
        self.truth.sent(message)

    def alert(self, alert: Mapping[str, Any]) -> None:
        self.alerts_read += 1
        self.stories.add(alert)
        self.truth.add(alert)

    def scraped(self, metrics: dict[str, float], now: float | None = None) -> None:
        """A /metrics scrape. Events count once, where they end: applied or dead-lettered
        (a rerouted event is counted again when its partition applies it)."""
        self.metrics = metrics
        dead = sum(v for k, v in metrics.items() if k.startswith("dead:"))
        totals = {
            "published": self.published,
            "processed": metrics.get("outcome:processed", 0.0) + dead,
            "rerouted": metrics.get("outcome:rerouted", 0.0),
            "alerts": sum(v for k, v in metrics.items() if k.startswith("alert:")),
            "dead": dead,
        }
        for name, total in totals.items():
            self.rates[name].update(total, now)

    def status_line(self) -> str:
        """One plain line, for output that is not a terminal."""
        r = {name: rate.per_second for name, rate in self.rates.items()}
        alerts = ", ".join(
            f"{k[6:]}={int(v)}" for k, v in sorted(self.metrics.items()) if k[:6] == "alert:" and v
        )
        return (
            f"rates: {r['published']:.0f} published/s, {r['processed']:.0f} events/s "
            f"({r['rerouted']:.0f} rerouted/s), "
            f"{r['alerts']:.0f} alerts/s, {r['dead']:.0f} dead letters/s | alerts [{alerts}]"
        )

    def render(self, story_rows: int = 10) -> RenderableType:
        clock = self.truth.clock
        header = Text.assemble(
            ("hitrun demo", "bold"),
            f"  run {self.run_id}  seed {self.seed}  stream clock ",
            (f"{clock:%Y-%m-%d %H:%M}" if clock else "-", "cyan"),
            "   Ctrl-C stops everything",
        )
        r = {name: rate.per_second for name, rate in self.rates.items()}
        rates = Text.assemble(
            ("rates  ", "bold"),
            f"{r['published']:,.0f} published/s · ",
            (f"{r['processed']:,.0f} events/s", "green"),
            f" ({r['rerouted']:,.0f} rerouted/s) · ",
            (f"{r['alerts']:,.0f} alerts/s", "yellow"),
            " · ",
            (f"{r['dead']:,.0f} dead letters/s", "red"),
            f"   totals: {self.published:,} published, {self.alerts_read:,} alerts read",
        )
        return Group(
            header, rates, self._stories(story_rows), self._truth_table(), self._dead_letters()
        )

    def _stories(self, rows: int) -> Table:
        table = Table(title="customers' stories, latest first", title_justify="left", expand=True)
        table.add_column("customer", no_wrap=True)
        table.add_column("story", no_wrap=True, overflow="ellipsis", ratio=1)
        table.add_column("simulated as", no_wrap=True)
        for customer, line, kind in self.stories.latest(rows):
            table.add_row(customer, line, kind)
        return table

    def _truth_table(self) -> Table:
        table = Table(
            title="ground truth: the simulator's customers against hitrun's alerts",
            title_justify="left",
        )
        table.add_column("customers who")
        table.add_column("hitrun says (not reversed)")
        for name in ("so far", "due", "found", "recall", "flagged", "precision"):
            table.add_column(name, justify="right")
        for s in self.truth.scores():
            table.add_row(
                s.expectation.label,
                s.expectation.alert,
                f"{s.customers:,}",
                f"{s.due:,}",
                f"{s.found:,}",
                _percent(s.recall),
                f"{s.flagged:,}",
                _percent(s.precision),
            )
        return table

    def _dead_letters(self) -> Text:
        """Dead letters by reason, against the malformed messages the simulator sent."""
        reasons = {k[5:] for k, v in self.metrics.items() if k.startswith("dead:") and v}
        line = Text.assemble(
            ("dead letters by reason", "bold"), " (dead-lettered/sent malformed): "
        )
        for n, reason in enumerate(sorted(reasons | set(self.facts.malformed))):
            dead = int(self.metrics.get(f"dead:{reason}", 0))
            line.append(" · " if n else "")
            line.append(reason, "red" if reason not in self.facts.malformed else "")
            line.append(f" {dead:,}/{self.facts.malformed.get(reason, 0):,}")
        return line


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
