"""Synthetic shop traffic with a known ground truth, for the demo, the tests and the benchmark."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from hitrun.streams.partitioning import partition_for_key

# Customer kinds and how often each is generated.
DEFAULT_MIX: dict[str, float] = {
    "pays_promptly": 0.35,
    "pays_after_reminder": 0.12,
    "never_pays": 0.08,
    "cod_refuser": 0.03,
    "one_time_buyer": 0.22,
    "loyal_repeat_buyer": 0.15,
    "inquiry_only": 0.05,
}

# Every way a message can be malformed, named by the dead-letter reason it must get.
MALFORMATIONS = (
    "not_json",
    "undecodable",
    "not_an_object",
    "unknown_event_type",
    "wrong_topic",
    "timestamp_without_offset",
    "schema_violation",
    "missing_key",
    "key_mismatch",
    "oversized",
)

ROLES = ("checkouts", "payments", "orders", "inquiries")

# The generator packs days of shop activity into seconds of traffic (a new
# customer every two minutes of event time). A live worker reads each input
# topic at its own pace, so the few hundred messages by which one topic runs
# ahead of another span hours of event time here, where real traffic spans
# seconds. Live runs of simulated traffic therefore allow this much lateness
# (HITRUN_ALLOWED_LATENESS) instead of the default hour.
SIMULATED_LATENESS = "30d"
# For the same reason its event times run ahead of the wall clock (a run at
# 300 messages/s covers months in minutes): a live worker fed simulated traffic
# that starts now allows that much (HITRUN_MAX_CLOCK_SKEW) instead of the
# default 5 minutes, which protects real traffic from hostile timestamps.
SIMULATED_CLOCK_SKEW = "3650d"

_CATEGORIES = ("shoes", "apparel", "electronics", "beauty", "home", "toys", "books")
_TIME_ZONES = ("Asia/Jakarta", "Asia/Singapore", "Asia/Kuala_Lumpur", "Asia/Manila", None)
_SOURCES = ("direct", "search", "ad", "social", "email", "referral")

# Kinds that buy at most once (never_pays only tries); their first order shows
# the one-time-buyer traits (agents/risk.py) more often than other first orders.
_ONE_TIMERS = frozenset({"pays_promptly", "pays_after_reminder", "one_time_buyer", "never_pays"})


@dataclass(frozen=True)
class _FirstOrderOdds:
    """How often a customer's first order shows each one-time-buyer trait."""

    gift: float  # shipped to an address other than the buyer's
    search_or_ad: float  # arrived from search or an ad (otherwise from any source)
    promotion: float  # used a first-order promotion code
    one_category: float  # each further item is in the first item's category
    accessory_only: float  # every item is an accessory
    several_first_day: float  # orders cancelled by the buyer before the paid one, same day


_ODDS = {
    "one_timer": _FirstOrderOdds(0.3, 0.5, 0.45, 0.85, 0.2, 0.15),
    "other": _FirstOrderOdds(0.08, 0.0, 0.15, 0.4, 0.05, 0.03),
}


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message to publish: the input topic role, key and value bytes, and what it is."""

    role: str
    key: bytes | None
    value: bytes
    occurred_at: datetime
    customer_id: str
    # A customer kind from DEFAULT_MIX, or "malformed:<reason>".
    label: str


@dataclass
class GroundTruth:
    """What the generator meant: each customer's kind, and the malformed messages by reason."""

    customers: dict[str, str] = field(default_factory=dict)
    malformed: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    # With identities: the person behind each account (an evader's accounts share one).
    persons: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "customers": self.customers,
            "kinds": dict(Counter(self.customers.values())),
            "malformed": dict(self.malformed),
            **({"persons": self.persons} if self.persons else {}),
        }


@dataclass(frozen=True)
class TrafficShape:
    """How the traffic looks: who arrives how often, and how much of it is broken."""

    seed: int = 1
    start: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    customer_gap: timedelta = timedelta(minutes=2)
    malformed_ratio: float = 0.01
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    shops: int = 5
    max_message_bytes: int = 65536
    # Hashed identifiers on checkouts and payments (checkout_confirmed v2): each
    # person's phone, e-mail, device, payment instrument and address.
    identities: bool = False
    # Share of customers who are evaders: three unpaid orders (a blacklisting),
    # then back under a new account id with some identifiers reused. Implies identities.
    evaders: float = 0.0
    # Share of customers who order from a shared device (an office, an internet
    # cafe, a pickup point's kiosk): one of `shared_devices`, used by many strangers.
    shared_device_users: float = 0.0
    shared_devices: int = 20


class _Ids:
    """Deterministic identifiers drawn from the generator's random source."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def new(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(64):016x}"


def _ts(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


# What an evader's new account reuses of the old one's identifiers, by kind: a new
# e-mail address is free, a new phone number costs money, a device or a card is
# kept; the address depends on whether they moved.
EVADER_REUSE = {
    "phone": 0.6,
    "email": 0.1,
    "device": 0.5,
    "payment_instrument": 0.4,
    "shipping_address": 0.6,
}


def identifier_hash(owner: str, kind: str) -> str:
    """The hashed identifier of kind `kind` that belongs to `owner` (a person, a shared
    device): what a shop's HMAC would give, without the key."""
    return hashlib.sha256(f"{owner}\x1f{kind}".encode()).hexdigest()


@dataclass
class _Identity:
    """Whose identifiers an account shows, kind by kind."""

    owners: dict[str, str]

    def checkout(self) -> dict[str, str]:
        return {
            kind: identifier_hash(owner, kind)
            for kind, owner in self.owners.items()
            if kind != "payment_instrument"
        }

    def payment(self) -> dict[str, str]:
        return {"payment_instrument": identifier_hash(self.owners["payment_instrument"], "pi")}


_KINDS = ("phone", "email", "device", "payment_instrument", "shipping_address")


class _Customer:
    """Builds one customer's timeline of (event time, role, body)."""

    def __init__(
        self,
        cid: str,
        kind: str,
        start: datetime,
        shop: str,
        rng: random.Random,
        shape: TrafficShape | None = None,
        second_id: str | None = None,
    ) -> None:
        self.cid, self.kind, self.start, self.shop, self.rng = cid, kind, start, shop, rng
        self.second_id = second_id
        # Identities come from a random source of their own: traffic without them
        # is the same with or without this option.
        self.identities: dict[str, _Identity] = {}
        if shape is not None and (shape.identities or shape.evaders):
            self._identities(shape, random.Random(f"{shape.seed}:{cid}"))
        self.ids = _Ids(rng)
        self.tz = rng.choice(_TIME_ZONES)
        self.address = f"addr-{rng.getrandbits(32):08x}"
        self.odds = _ODDS["one_timer" if kind in _ONE_TIMERS else "other"]

    def _identities(self, shape: TrafficShape, rng: random.Random) -> None:
        owners = dict.fromkeys(_KINDS, self.cid)
        if rng.random() < shape.shared_device_users:
            owners["device"] = f"shared-device-{shape.seed}-{rng.randrange(shape.shared_devices)}"
        self.identities[self.cid] = _Identity(owners)
        if self.second_id is not None:
            again = {
                kind: owner if rng.random() < EVADER_REUSE[kind] else self.second_id
                for kind, owner in owners.items()
            }
            self.identities[self.second_id] = _Identity(again)

    def _base(self, type_: str, at: datetime, cid: str | None = None) -> dict[str, Any]:
        return {
            "type": type_,
            "event_id": self.ids.new("evt"),
            "customer_id": cid or self.cid,
            "shop_id": self.shop,
            "occurred_at": _ts(at),
        }

    def checkout(self, at: datetime, method: str, first: bool) -> tuple[dict[str, Any], int]:
        rng, odds = self.rng, self.odds
        category = rng.choice(_CATEGORIES)
        same = odds.one_category if first else 0.7
        items: list[dict[str, Any]] = [
            {
                "sku": self.ids.new("sku"),
                "category": category if n == 0 or rng.random() < same else rng.choice(_CATEGORIES),
                "quantity": rng.randint(1, 3),
                "unit_price_minor": rng.randrange(5_000, 500_000, 500),
            }
            for n in range(rng.randint(1, 3))
        ]
        if first and rng.random() < odds.accessory_only:
            for item in items:
                item["accessory"] = True
        total = sum(i["quantity"] * i["unit_price_minor"] for i in items)
        gift = first and rng.random() < odds.gift
        body = self._base("checkout_confirmed", at) | {
            "order_id": self.ids.new("ord"),
            "total": {"amount_minor": total, "currency": "IDR"},
            "payment_method": method,
            "items": items,
            "shipping_address_hash": f"addr-{rng.getrandbits(32):08x}" if gift else self.address,
            "customer_address_hash": self.address,
            "traffic_source": rng.choice(("search", "ad"))
            if first and rng.random() < odds.search_or_ad
            else rng.choice(_SOURCES),
            "promotion_code": "WELCOME10" if first and rng.random() < odds.promotion else None,
            "customer_time_zone": self.tz,
        }
        return body, total

    def payment(
        self, at: datetime, order: dict[str, Any], status: str = "succeeded"
    ) -> dict[str, Any]:
        return self._base("payment_attempted", at) | {
            "order_id": order["order_id"],
            "payment_id": self.ids.new("pay"),
            "status": status,
            "amount": order["total"],
            "method": order["payment_method"],
            "failure_reason": "declined" if status == "failed" else None,
        }

    def order_status(
        self, at: datetime, order: dict[str, Any], status: str, by: str | None = None
    ) -> dict[str, Any]:
        body = self._base("order_status_changed", at) | {
            "order_id": order["order_id"],
            "status": status,
        }
        if by is not None:
            body["cancelled_by"] = by
        return body

    def timeline(self) -> list[tuple[datetime, str, dict[str, Any]]]:
        rng, t = self.rng, self.start
        out: list[tuple[datetime, str, dict[str, Any]]] = []
        minutes = timedelta(minutes=1)

        def buy(at: datetime, first: bool) -> None:
            order, _ = self.checkout(at, rng.choice(("card", "e_wallet", "bank_transfer")), first)
            paid = at + rng.randint(2, 30) * minutes
            out.extend([(at, "checkouts", order), (paid, "payments", self.payment(paid, order))])

        def second_thoughts(at: datetime) -> datetime:
            """Orders placed and cancelled by the buyer before the first paid one; its time."""
            if rng.random() >= self.odds.several_first_day:
                return at
            for _ in range(rng.randint(1, 2)):
                order, _ = self.checkout(at, rng.choice(("card", "e_wallet")), True)
                cancelled = at + rng.randint(2, 20) * minutes
                out.append((at, "checkouts", order))
                out.append(
                    (cancelled, "orders", self.order_status(cancelled, order, "cancelled", "buyer"))
                )
                at = cancelled + rng.randint(5, 60) * minutes
            return at

        if self.kind in ("pays_promptly", "pays_after_reminder", "one_time_buyer"):
            t = second_thoughts(t)
        if self.kind == "pays_promptly":
            buy(t, True)
        elif self.kind == "pays_after_reminder":
            order, _ = self.checkout(t, "bank_transfer", True)
            paid = t + rng.randint(70, 300) * minutes
            out += [(t, "checkouts", order), (paid, "payments", self.payment(paid, order))]
        elif self.kind == "never_pays":
            for n in range(rng.randint(1, 3)):
                at = t + timedelta(days=n * rng.randint(3, 20))
                order, _ = self.checkout(
                    at, rng.choice(("bank_transfer", "convenience_store")), n == 0
                )
                out.append((at, "checkouts", order))
                if rng.random() < 0.3:
                    failed = at + 5 * minutes
                    out.append((failed, "payments", self.payment(failed, order, "failed")))
        elif self.kind == "cod_refuser":
            order, _ = self.checkout(t, "cash_on_delivery", True)
            refused = t + timedelta(days=rng.randint(2, 5))
            out += [
                (t, "checkouts", order),
                (refused, "orders", self.order_status(refused, order, "cod_refused")),
            ]
        elif self.kind == "one_time_buyer":
            buy(t, True)
        elif self.kind == "loyal_repeat_buyer":
            at = second_thoughts(t)
            for n in range(rng.randint(4, 8)):
                buy(at, n == 0)
                at += timedelta(days=rng.randint(10, 40), minutes=rng.randint(0, 600))
        elif self.kind == "evader":
            # Three unpaid transfers a day apart: three strikes, the blacklist. Then
            # back as a new account, some weeks later, buying as if nothing happened.
            for n in range(3):
                at = t + timedelta(days=n, minutes=rng.randint(0, 600))
                order, _ = self.checkout(at, "bank_transfer", n == 0)
                out.append((at, "checkouts", order))
            back = t + timedelta(days=rng.randint(10, 60), minutes=rng.randint(0, 600))
            self.cid, first_cid = cast(str, self.second_id), self.cid
            for n in range(rng.randint(1, 3)):
                buy(back + timedelta(days=n * rng.randint(2, 15)), n == 0)
            self.cid = first_cid
        elif self.kind == "inquiry_only":
            for n in range(rng.randint(1, 3)):
                at = t + timedelta(days=n * rng.randint(1, 10))
                body = self._base("inquiry_received", at) | {
                    "inquiry_id": self.ids.new("inq"),
                    "product_id": self.ids.new("sku"),
                    "channel": rng.choice(("chat", "email", "form")),
                }
                out.append((at, "inquiries", body))
        else:
            raise ValueError(f"unknown customer kind {self.kind!r}")
        out.sort(key=lambda entry: entry[0])
        for _at, role, body in out:
            shown = self.identities.get(body["customer_id"])
            if shown is not None and role in ("checkouts", "payments"):
                body["identifiers"] = shown.checkout() if role == "checkouts" else shown.payment()
        return out


def _malformed(reason: str, rng: random.Random, at: datetime, max_bytes: int) -> SimMessage:
    ids = _Ids(rng)
    cid = ids.new("cust")
    good = {
        "type": "checkout_confirmed",
        "event_id": ids.new("evt"),
        "customer_id": cid,
        "shop_id": "shop-1",
        "occurred_at": _ts(at),
        "order_id": ids.new("ord"),
        "total": {"amount_minor": 1000, "currency": "IDR"},
        "payment_method": "card",
    }
    key: bytes | None = cid.encode()
    role = "checkouts"
    builders: dict[str, Callable[[], bytes]] = {
        "not_json": lambda: b'{"type": "checkout_confirmed", "event_id": ',
        "undecodable": lambda: b'{"type": "checkout_confirmed", "shop_id": "caf\xe9"}',
        "not_an_object": lambda: b'["checkout_confirmed", 1000]',
        "unknown_event_type": lambda: orjson.dumps(good | {"type": "checkout_created"}),
        "wrong_topic": lambda: orjson.dumps(good | {"type": "inquiry_received", "inquiry_id": "q"}),
        "timestamp_without_offset": lambda: orjson.dumps(good | {"occurred_at": _ts(at)[:19]}),
        "schema_violation": lambda: orjson.dumps(
            good | {"total": {"amount_minor": 10.5, "currency": "IDR"}}
        ),
        "missing_key": lambda: orjson.dumps(good),
        "key_mismatch": lambda: orjson.dumps(good),
        "oversized": lambda: orjson.dumps(good | {"promotion_code": "x" * max_bytes}),
    }
    value = builders[reason]()
    if reason == "missing_key":
        key = None
    elif reason == "key_mismatch":
        key = b"someone-else"
    return SimMessage(role, key, value, at, cid, f"malformed:{reason}")


def generate(
    shape: TrafficShape, count: int, truth: GroundTruth | None = None
) -> Iterator[SimMessage]:
    """Yield `count` messages in event-time order; fill `truth` as customers appear."""
    rng = random.Random(shape.seed)
    truth = truth if truth is not None else GroundTruth()
    mix = shape.mix | ({"evader": shape.evaders} if shape.evaders else {})
    kinds, weights = zip(*mix.items(), strict=True)
    queue: list[tuple[datetime, int, int, SimMessage]] = []
    sequence = itertools.count()
    next_arrival = shape.start
    customer_no = 0
    malformed_cycle = itertools.cycle(MALFORMATIONS)
    emitted = 0
    while emitted < count:
        # Admit customers until the earliest pending event is older than the next arrival.
        while not queue or queue[0][0] >= next_arrival:
            customer_no += 1
            cid = f"cust-{shape.seed}-{customer_no:07d}"
            kind = rng.choices(kinds, weights)[0]
            shop = f"shop-{rng.randint(1, shape.shops)}"
            second = f"cust-{shape.seed}-{customer_no:07d}r" if kind == "evader" else None
            customer = _Customer(cid, kind, next_arrival, shop, rng, shape, second)
            truth.customers[cid] = kind
            if customer.identities:
                truth.persons[cid] = cid
            if second is not None:
                truth.customers[second] = "evader_returned"
                truth.persons[second] = cid
            for at, role, body in customer.timeline():
                who = str(body["customer_id"])
                label = truth.customers[who]
                message = SimMessage(role, who.encode(), orjson.dumps(body), at, who, label)
                heapq.heappush(queue, (at, customer_no, next(sequence), message))
            next_arrival += shape.customer_gap * (0.5 + rng.random())
        if rng.random() < shape.malformed_ratio:
            reason = next(malformed_cycle)
            truth.malformed[reason] += 1
            yield _malformed(reason, rng, queue[0][0], shape.max_message_bytes)
        else:
            yield heapq.heappop(queue)[3]
        emitted += 1
        truth.messages = emitted


Partitioner = Callable[[bytes | None, int, random.Random], int]


def murmur2_partitioner(key: bytes | None, partitions: int, rng: random.Random) -> int:
    """Java's and aiokafka's default: what hitrun expects."""
    return rng.randrange(partitions) if key is None else partition_for_key(key, partitions)


def crc32_partitioner(key: bytes | None, partitions: int, rng: random.Random) -> int:
    """librdkafka's default for keyed messages (consistent_random): CRC32 of the key."""
    return rng.randrange(partitions) if key is None else zlib.crc32(key) % partitions


PARTITIONERS: dict[str, Partitioner] = {"murmur2": murmur2_partitioner, "crc32": crc32_partitioner}
