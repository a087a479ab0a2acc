"""The "single purchase, then gone" definitions, computed the direct way, and files to check."""

# `expected_events` follows docs/detection.md over a plain list of purchases, one
# customer at a time, and shares no code with agents/retention.py so that it can
# check it. `write_transactions_csv` writes a seeded transactions file whose
# customers exercise every rule and tie rule.

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

Purchase = tuple[str, datetime, str]  # (customer_id, at, order_id)
Inquiry = tuple[str, datetime]  # (customer_id, at)

FIRST_PURCHASE = "first_purchase"
SINGLE_PURCHASE = "single_purchase"
EARLY_CHURN = "early_churn"
CUSTOMER_RETURNED = "customer_returned"
INQUIRY_ONLY = "inquiry_only"
KINDS = (FIRST_PURCHASE, SINGLE_PURCHASE, EARLY_CHURN, CUSTOMER_RETURNED, INQUIRY_ONLY)

NEW = "new"
IN_WINDOW = "in_window"
WATCHING = "watching"
FLAGGED = "flagged"

CSV_HEADER = ("customer_id", "timestamp", "amount", "order_id")


@dataclass(frozen=True)
class OraclePolicy:
    window: timedelta = timedelta(days=90)
    dormancy: timedelta = timedelta(days=90)
    churn_min: int = 2
    churn_max: int = 5
    flag_memory: timedelta = timedelta(days=365)


@dataclass(frozen=True)
class OracleEvent:
    """What the definitions say happens; fields that do not apply to a kind keep their default."""

    kind: str
    customer_id: str
    at: datetime
    order_id: str = ""  # first_purchase, single_purchase, customer_returned
    flag: str = ""  # customer_returned: the flag the customer came back from
    count: int = 0  # single_purchase, early_churn: purchases of the cycle; inquiry_only: inquiries
    since_flag: timedelta | None = None  # customer_returned: p - f


@dataclass
class _Customer:
    """One customer's phase and memory; methods apply one purchase, inquiry or timer."""

    customer_id: str
    policy: OraclePolicy
    phase: str = NEW
    cycle: list[tuple[datetime, str]] = field(default_factory=list)  # (at, order_id)
    flag: str = ""
    flagged_at: datetime | None = None
    inquiry_opened: datetime | None = None
    inquiries: int = 0
    events: list[OracleEvent] = field(default_factory=list)

    def due(self) -> datetime | None:
        """The instant of the one pending timer, if any."""
        p = self.policy
        if self.phase == IN_WINDOW:
            return self.cycle[0][0] + p.window
        if self.phase == WATCHING:
            return max(self.cycle[0][0] + p.window, self.cycle[-1][0] + p.dormancy)
        if self.phase == FLAGGED:
            assert self.flagged_at is not None
            return self.flagged_at + p.flag_memory
        if self.inquiry_opened is not None:
            return self.inquiry_opened + p.window
        return None

    def fire_timers(self, until: datetime | None) -> None:
        """Fire every timer due at or before `until` (all of them if None), in time order."""
        while (due := self.due()) is not None and (until is None or due <= until):
            self.fire(due)

    def fire(self, now: datetime) -> None:
        p = self.policy
        n = len(self.cycle)
        if self.phase == IN_WINDOW:
            if n == 1:
                self.emit(SINGLE_PURCHASE, now, order_id=self.cycle[0][1], count=1)
                self.flag_at(SINGLE_PURCHASE, now)
            else:
                self.phase = WATCHING
        elif self.phase == WATCHING:
            if p.churn_min <= n <= p.churn_max:
                self.emit(EARLY_CHURN, now, count=n)
                self.flag_at(EARLY_CHURN, now)
            else:
                self.forget()
        elif self.phase == FLAGGED:
            self.forget()
        else:
            self.emit(INQUIRY_ONLY, now, count=self.inquiries)
            self.inquiry_opened, self.inquiries = None, 0

    def purchase(self, at: datetime, order_id: str) -> None:
        if self.phase == NEW:
            # Timers up to `at` have fired, so an open inquiry window is still open: close it.
            self.inquiry_opened, self.inquiries = None, 0
            self.emit(FIRST_PURCHASE, at, order_id=order_id)
            self.open_cycle(at, order_id)
        elif self.phase == FLAGGED:
            assert self.flagged_at is not None
            self.emit(
                CUSTOMER_RETURNED,
                at,
                order_id=order_id,
                flag=self.flag,
                since_flag=at - self.flagged_at,
            )
            self.open_cycle(at, order_id)
        else:
            self.cycle.append((at, order_id))

    def inquiry(self, at: datetime) -> None:
        if self.phase != NEW:
            return
        if self.inquiry_opened is None:
            self.inquiry_opened = at
        self.inquiries += 1

    def open_cycle(self, at: datetime, order_id: str) -> None:
        self.phase, self.cycle = IN_WINDOW, [(at, order_id)]
        self.flag, self.flagged_at = "", None

    def flag_at(self, flag: str, at: datetime) -> None:
        self.phase, self.cycle = FLAGGED, []
        self.flag, self.flagged_at = flag, at

    def forget(self) -> None:
        self.phase, self.cycle = NEW, []
        self.flag, self.flagged_at = "", None

    def emit(
        self,
        kind: str,
        at: datetime,
        *,
        order_id: str = "",
        flag: str = "",
        count: int = 0,
        since_flag: timedelta | None = None,
    ) -> None:
        self.events.append(
            OracleEvent(kind, self.customer_id, at, order_id, flag, count, since_flag)
        )


def expected_events(
    purchases: Iterable[Purchase],
    inquiries: Iterable[Inquiry] = (),
    *,
    policy: OraclePolicy = OraclePolicy(),
    end: datetime | None = None,
) -> list[OracleEvent]:
    """Every event the definitions give, by (at, customer_id); a customer's own in causal order.

    Nothing at or after `end` is known; timers due at or before it fire. Without
    `end`, every timer fires.
    """
    # Per customer: (at, 0, order_id) for purchases, (at, 1, "") for inquiries.
    # At one instant both orders give the same result; purchases go first.
    inputs: dict[str, list[tuple[datetime, int, str]]] = defaultdict(list)
    for customer_id, at, order_id in purchases:
        inputs[customer_id].append((at, 0, order_id))
    for customer_id, at in inquiries:
        inputs[customer_id].append((at, 1, ""))

    events: list[OracleEvent] = []
    for customer_id in sorted(inputs):
        customer = _Customer(customer_id, policy)
        seen_orders: set[str] = set()
        for at, rank, order_id in sorted(inputs[customer_id]):
            if end is not None and at >= end:
                break
            if rank == 0:
                if order_id in seen_orders:
                    continue  # an order counts once: its earliest row
                seen_orders.add(order_id)
            customer.fire_timers(until=at)
            if rank == 0:
                customer.purchase(at, order_id)
            else:
                customer.inquiry(at)
        customer.fire_timers(until=end)
        events += customer.events
    # A stable sort keeps a customer's events at one instant in the order they happened
    # (a flag before the return it causes), which sorting by kind would not.
    events.sort(key=lambda e: (e.at, e.customer_id))
    return events


def expected_counts(
    purchases: Iterable[Purchase],
    inquiries: Iterable[Inquiry] = (),
    *,
    policy: OraclePolicy = OraclePolicy(),
    end: datetime | None = None,
) -> Counter[str]:
    """How many events of each kind `expected_events` gives."""
    events = expected_events(purchases, inquiries, policy=policy, end=end)
    return Counter(e.kind for e in events)


# --- A transactions file with known answers ----------------------------------------------

# Profile -> relative weight. The customer id starts with its profile, so that a
# test (or a person reading a failure) can tell what each customer was meant to do.
PROFILES: dict[str, int] = {
    "single": 20,  # one purchase, then nothing
    "churn": 15,  # churn_min..churn_max purchases, then silent
    "loyal": 12,  # more than churn_max purchases, each within D of the previous one
    "back-single": 10,  # flagged single_purchase, then back before the flag is forgotten
    "back-churn": 10,  # flagged early_churn, then back before the flag is forgotten
    "forgotten": 8,  # flagged, then back only after the flag memory has passed
    "edge-window": 4,  # a second purchase exactly at s+W
    "edge-dormancy": 4,  # a purchase exactly when the early-churn timer is due
    "edge-memory": 3,  # a purchase exactly at f+M
    "mixed": 14,  # random gaps around W, D and M: whatever the rules make of them
}

FIRST_PURCHASES_SPREAD = timedelta(days=180)


def _seconds(span: timedelta) -> int:
    return int(span.total_seconds())


def _inside(rng: random.Random, start: datetime, span: timedelta) -> datetime:
    """A whole-second instant strictly between start and start + span."""
    return start + timedelta(seconds=rng.randint(1, _seconds(span) - 1))


def _churn_cycle(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    """Purchases of an early-churn cycle from s: enough to churn, all inside the window."""
    n = rng.randint(max(2, policy.churn_min), policy.churn_max)
    return [s, *sorted(_inside(rng, s, policy.window) for _ in range(n - 1))]


def _churn_due(times: list[datetime], policy: OraclePolicy) -> datetime:
    return max(times[0] + policy.window, times[-1] + policy.dormancy)


def _single(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    return [s]


def _churn(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    times = _churn_cycle(rng, s, policy)
    # Half of them, if the count allows, buy once more after the window while watching.
    while_watching = times[-1] + policy.dormancy - (s + policy.window)
    if len(times) < policy.churn_max and while_watching > timedelta(0) and rng.random() < 0.5:
        times.append(s + policy.window + timedelta(seconds=rng.randrange(_seconds(while_watching))))
    return times


def _loyal(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    # Gaps shorter than both W and D keep every purchase in the one cycle.
    longest_gap = min(policy.window, policy.dormancy)
    times = [s]
    for _ in range(rng.randint(policy.churn_max + 1, policy.churn_max + 4) - 1):
        times.append(_inside(rng, times[-1], longest_gap))
    return times


def _back_single(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    return [s, _inside(rng, s + policy.window, policy.flag_memory)]


def _back_churn(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    times = _churn_cycle(rng, s, policy)
    return [*times, _inside(rng, _churn_due(times, policy), policy.flag_memory)]


def _forgotten(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    times = _churn_cycle(rng, s, policy) if rng.random() < 0.5 else [s]
    flagged = _churn_due(times, policy) if len(times) > 1 else s + policy.window
    return [*times, flagged + policy.flag_memory + timedelta(seconds=rng.randint(1, 86_400 * 200))]


def _edge_window(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    return [s, s + policy.window]


def _edge_dormancy(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    times = _churn_cycle(rng, s, policy)
    return [*times, _churn_due(times, policy)]


def _edge_memory(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    return [s, s + policy.window + policy.flag_memory]


def _mixed(rng: random.Random, s: datetime, policy: OraclePolicy) -> list[datetime]:
    around = (policy.window, policy.dormancy, policy.flag_memory, timedelta(days=1))
    times = [s]
    for _ in range(rng.randint(1, 7)):
        gap = rng.choice(around) * rng.uniform(0.2, 1.3)
        times.append(times[-1] + timedelta(seconds=max(1, _seconds(gap))))
    return times


_BUILDERS: dict[str, Callable[[random.Random, datetime, OraclePolicy], list[datetime]]] = {
    "single": _single,
    "churn": _churn,
    "loyal": _loyal,
    "back-single": _back_single,
    "back-churn": _back_churn,
    "forgotten": _forgotten,
    "edge-window": _edge_window,
    "edge-dormancy": _edge_dormancy,
    "edge-memory": _edge_memory,
    "mixed": _mixed,
}


def profile_of(customer_id: str) -> str:
    """The profile a generated customer was built from."""
    return customer_id.rsplit("-", 1)[0]


def write_transactions_csv(
    path: Path, *, seed: int, customers: int, start: datetime, policy: OraclePolicy
) -> None:
    """Write a seeded transactions file, one row per order, in time order.

    The first customers take each profile once, so that any file of at least
    len(PROFILES) customers exercises every rule; the rest are drawn by weight.
    """
    rng = random.Random(seed)
    start = start.replace(microsecond=0)
    names = list(PROFILES)
    rows: list[tuple[datetime, str, str, str]] = []  # (at, customer_id, order_id, amount)
    for i in range(customers):
        profile = names[i] if i < len(names) else rng.choices(names, list(PROFILES.values()))[0]
        customer_id = f"{profile}-{i:05d}"
        first = start + timedelta(seconds=rng.randrange(_seconds(FIRST_PURCHASES_SPREAD)))
        for k, at in enumerate(_BUILDERS[profile](rng, first, policy), start=1):
            cents = rng.randint(500, 50_000)
            rows.append(
                (at, customer_id, f"{customer_id}-{k}", f"{cents // 100}.{cents % 100:02d}")
            )
    rows.sort()
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for at, customer_id, order_id, amount in rows:
            writer.writerow((customer_id, at.astimezone(UTC).isoformat(), amount, order_id))


def read_purchases_csv(path: Path) -> list[Purchase]:
    """The (customer_id, at, order_id) purchases of a transactions file, in file order."""
    with path.open(newline="", encoding="utf-8") as source:
        return [
            (row["customer_id"], datetime.fromisoformat(row["timestamp"]), row["order_id"])
            for row in csv.DictReader(source)
        ]
