"""First-purchase risk: how much a new customer's first order looks like a one-time buyer's.

The factors are the early-warning traits of a one-time buyer (docs/detection.md).
Each is a hint, never proof; the score is the weighted share of factors present:

    score = sum(weight of each present factor) / sum(all weights)

so it lies in [0, 1], and is 0 when every weight is 0. docs/detection.md gives
the exact definition of each factor and the offline evaluation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from datetime import datetime

import msgspec

from hitrun.schemas.records import CheckoutConfirmed

# Arrival channels that bring customers looking for one product rather than for the shop.
SEARCH_OR_AD = frozenset({"search", "ad"})


class OrderTraits(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """What a checkout says about an order, kept until the customer's first purchase."""

    order_id: str
    at: datetime  # checkout event time
    gift: bool | None  # ships elsewhere than the buyer's address; None when either is unknown
    traffic_source: str | None
    promotion: bool  # a non-empty promotion code was used
    categories: tuple[str, ...]  # sorted distinct item categories; empty when no items given
    accessory_only: bool  # every item is an accessory; False when no items given


def traits_of(event: CheckoutConfirmed) -> OrderTraits:
    """The risk-relevant traits of a confirmed checkout."""
    ship, home = event.shipping_address_hash, event.customer_address_hash
    return OrderTraits(
        order_id=event.order_id,
        at=event.occurred_at,
        gift=None if ship is None or home is None else ship != home,
        traffic_source=event.traffic_source,
        promotion=bool(event.promotion_code),
        categories=tuple(sorted({item.category for item in event.items})) if event.items else (),
        accessory_only=bool(event.items) and all(item.accessory for item in event.items),
    )


@dataclass(frozen=True, slots=True)
class RiskWeights:
    """How much each factor counts. Only the ratios matter: the score is normalised.

    The defaults are heuristics, not fitted to data: they sum to 1, give the
    most weight to the traits that say the buyer is not buying for themselves
    (a gift) or came for a deal (a first-order promotion), and less to traits
    that many loyal customers' first orders share too (a one-category basket).
    Override them with `HITRUN_RISK_WEIGHTS` once a shop knows its outcomes.
    """

    gift_shipping: float = 0.25
    search_or_ad_arrival: float = 0.15
    first_order_promotion: float = 0.20
    single_category_basket: float = 0.10
    accessory_only_basket: float = 0.15
    several_orders_first_day: float = 0.15

    def __post_init__(self) -> None:
        for name, value in self.as_dict().items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"weight of {name} must be a finite number >= 0, got {value!r}")

    def as_dict(self) -> dict[str, float]:
        """{factor: weight}, in FACTORS order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# The factor names, in the order they are reported.
FACTORS: tuple[str, ...] = tuple(f.name for f in fields(RiskWeights))


def parse_weights(text: str) -> RiskWeights:
    """`gift_shipping=0.3,first_order_promotion=0.2` -> the defaults with those two replaced.

    Empty text gives the defaults. An unknown factor, a repeated factor, a value
    that is not a finite number, or a negative value is a ValueError naming it.
    """
    if not text.strip():
        return RiskWeights()
    overrides: dict[str, float] = {}
    for part in text.split(","):
        name, sep, raw = (s.strip() for s in part.partition("="))
        if not sep or not name:
            raise ValueError(f"expected factor=weight pairs separated by commas, got {part!r}")
        if name not in FACTORS:
            raise ValueError(f"unknown risk factor {name!r}; known: {', '.join(FACTORS)}")
        if name in overrides:
            raise ValueError(f"risk factor {name} is given twice")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"weight of {name} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"weight of {name} must be a finite number, got {raw!r}")
        if value < 0:
            raise ValueError(f"weight of {name} must be >= 0, got {raw!r}")
        overrides[name] = value
    return RiskWeights(**overrides)


def _present(first: OrderTraits | None, orders_first_day: int) -> frozenset[str]:
    present: set[str] = set()
    if first is not None:
        if first.gift is True:
            present.add("gift_shipping")
        if first.traffic_source in SEARCH_OR_AD:
            present.add("search_or_ad_arrival")
        if first.promotion:
            present.add("first_order_promotion")
        if len(first.categories) == 1:
            present.add("single_category_basket")
        if first.accessory_only:
            present.add("accessory_only_basket")
    if orders_first_day >= 2:
        present.add("several_orders_first_day")
    return frozenset(present)


def assess(
    first: OrderTraits | None, orders_first_day: int, weights: RiskWeights
) -> tuple[float, tuple[str, ...]]:
    """The score in [0, 1] of a first purchase and the factors present, in FACTORS order.

    `first` is the purchased order's checkout traits, None when the checkout was
    not seen (then only several_orders_first_day can be present);
    `orders_first_day` counts the customer's checkouts in the 24 hours up to and
    including the purchase.
    """
    return _scored(_present(first, orders_first_day), weights)


# A score depends only on which factors are present (at most 2**len(FACTORS) sets)
# and the weights: computed once for each.
@functools.lru_cache(maxsize=1024)
def _scored(present: frozenset[str], weights: RiskWeights) -> tuple[float, tuple[str, ...]]:
    weight, total = _weight_table(weights)
    # Summing in FACTORS order with absent factors as 0 keeps the numerator <= the
    # denominator under float rounding, so the score never exceeds 1.
    hit = sum(weight[name] if name in present else 0.0 for name in FACTORS)
    score = hit / total if total > 0 else 0.0
    return score, tuple(name for name in FACTORS if name in present)


@functools.lru_cache(maxsize=16)
def _weight_table(weights: RiskWeights) -> tuple[dict[str, float], float]:
    """{factor: weight} and the sum of the weights (in FACTORS order), once per weights."""
    weight = weights.as_dict()
    return weight, sum(weight[name] for name in FACTORS)
