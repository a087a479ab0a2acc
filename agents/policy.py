"""Detection policies: the default numbers (README, "The rules"), with per-shop overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time, timedelta
from typing import Any

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# The values of `UnpaidPolicy.linked_accounts` and `.linked_strikes`.
LINKED_ACCOUNT_POLICIES = ("flag", "blacklist", "ignore")
LINKED_STRIKE_POLICIES = ("separate", "shared")


@dataclass(frozen=True, slots=True)
class ReminderSchedule:
    """When to remind: after checkout and before the deadline; steps outside the window skip."""

    after_checkout: tuple[timedelta, ...] = (HOUR,)
    before_deadline: tuple[timedelta, ...] = (3 * HOUR,)


def default_windows() -> dict[str, timedelta | None]:
    return {
        "card": HOUR,
        "e_wallet": HOUR,
        "bank_transfer": 24 * HOUR,
        "virtual_account": 24 * HOUR,
        "convenience_store": 48 * HOUR,
        # Cash on delivery is paid at the door: no payment deadline, only a refusal.
        "cash_on_delivery": None,
    }


@dataclass(frozen=True, slots=True)
class UnpaidPolicy:
    """Settings of the unpaid-after-checkout detector for one shop."""

    payment_windows: Mapping[str, timedelta | None] = field(default_factory=default_windows)
    reminders: ReminderSchedule = field(default_factory=ReminderSchedule)
    reminders_by_method: Mapping[str, ReminderSchedule] = field(default_factory=dict)
    reminder_cooldown: timedelta = 4 * HOUR
    quiet_start: time | None = time(21, 0)
    quiet_end: time | None = time(8, 0)
    strike_threshold: int = 3
    strike_window: timedelta = 90 * DAY
    blacklist_duration: timedelta = 90 * DAY
    # A repeat offender's next blacklisting lasts twice as long as the previous one,
    # while an earlier blacklisting ended less than this long ago.
    repeat_offender_memory: timedelta = 365 * DAY
    late_payment_grace: timedelta = 24 * HOUR
    buyer_cancellation_strikes: bool = False
    blacklist_scope: str = "shop"  # "shop": each shop's own list; "platform": one list
    payment_hold: timedelta = HOUR
    cod_max_open: timedelta = 30 * DAY
    dedupe_window: timedelta = 7 * DAY
    # A strong link to a customer on this shop's blacklist: "flag" raises
    # linked_account_flagged, "blacklist" does that and puts the linked customer on
    # the blacklist too, while both last; "ignore" does nothing (agents/identity.py).
    linked_accounts: str = "flag"
    # "shared": the strikes of strongly linked accounts count together towards this
    # shop's blacklist (each account is blacklisted when they reach the threshold);
    # "separate": each account's own only.
    linked_strikes: str = "separate"

    def window_for(self, method: str) -> timedelta | None:
        """Payment window of a method; methods missing from the table get the card window."""
        if method in self.payment_windows:
            return self.payment_windows[method]
        return self.payment_windows.get("card", HOUR)

    def schedule_for(self, method: str) -> ReminderSchedule:
        return self.reminders_by_method.get(method, self.reminders)

    def scope_of(self, shop_id: str) -> str:
        """The blacklist a strike at `shop_id` counts towards."""
        return "*" if self.blacklist_scope == "platform" else shop_id


@dataclass(frozen=True, slots=True)
class Policies:
    """The default policy and per-shop overrides."""

    default: UnpaidPolicy = field(default_factory=UnpaidPolicy)
    shops: Mapping[str, UnpaidPolicy] = field(default_factory=dict)

    def for_shop(self, shop_id: str) -> UnpaidPolicy:
        return self.shops.get(shop_id, self.default)

    @classmethod
    def from_overrides(
        cls, default: UnpaidPolicy, overrides: Mapping[str, Mapping[str, Any]]
    ) -> Policies:
        """Per-shop policies: the default with each shop's fields replaced."""
        return cls(
            default, {shop: replace(default, **values) for shop, values in overrides.items()}
        )
