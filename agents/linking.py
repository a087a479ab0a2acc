"""The customer agent's side of linked accounts, without Kafka.

What agents/customer.py needs around the two pure stages of agents/identity.py:
which shop policies a link sets off (`LinkRules`), the identity stage's
per-identifier states in a batch (`IdentifierStates`), and the identity topics'
records, signed when the workers share `HITRUN_INTERNAL_KEY` (`InternalRecords`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import msgspec

from hitrun.agents import identity, unpaid
from hitrun.agents.effects import Effect
from hitrun.agents.identity import (
    IdentifierState,
    IdentityState,
    LinkedAccountFlagged,
    LinkEffect,
    LinkPolicy,
    Report,
    Sighting,
)
from hitrun.agents.policy import Policies, UnpaidPolicy
from hitrun.agents.state import CustomerState, unstamped
from hitrun.streams.auth import SIGNATURE_HEADER, record_signature, verify_record


class LinkRules:
    """What a customer's links do, by the link policy and each shop's policy."""

    def __init__(self, policies: Policies, link_policy: LinkPolicy) -> None:
        self.policies = policies
        self.link_policy = link_policy
        # Only when a shop counts strikes together do announcements carry strikes,
        # and a strike makes the customer announce again.
        self.shares_strikes = any(
            p.linked_strikes == "shared" for p in (policies.default, *policies.shops.values())
        )

    def list_policy(self, scope: str) -> UnpaidPolicy:
        """The policy of a blacklist: the platform's follows the default, a shop's its own."""
        return self.policies.default if scope == "*" else self.policies.for_shop(scope)

    def flags(self, scope: str) -> bool:
        return self.list_policy(scope).linked_accounts in {"flag", "blacklist"}

    def extends(self, scope: str) -> bool:
        return self.list_policy(scope).linked_accounts == "blacklist"

    def announce(
        self,
        customer_id: str,
        state: CustomerState,
        identifiers: dict[str, str] | None,
        at: datetime,
        again: bool = False,
    ) -> list[Sighting]:
        """The sightings of the customer's identifiers the identity stage must hear of."""
        if not identifiers and state.identity is None:
            return []
        listed = unpaid.own_listings(state.unpaid)
        strikes = identity.strike_notes(state.unpaid) if self.shares_strikes else ()
        sightings = identity.announce(
            state.links(), customer_id, identifiers, at, listed, self.link_policy, again, strikes
        )
        state.tidy()
        return sightings

    def age(self, customer_id: str, state: CustomerState, now: datetime) -> list[LinkEffect]:
        """Drop the customer's link evidence older than the link window; the unlinks."""
        if state.identity is None:
            return []
        unlinked = identity.age(state.identity, customer_id, now, self.link_policy)
        state.tidy()
        return unlinked

    def expire(
        self, customer_id: str, state: CustomerState, upto: datetime
    ) -> tuple[list[LinkEffect], list[Effect]]:
        """Age the customer's strong links up to `upto`, each at the time its evidence ages
        out (not at whatever time the clock has reached): the unlinks, and what they change
        on its blacklists then. The same steps whenever they run, so the link alerts do not
        depend on how far the customer's own clock ran ahead of its link reports."""
        unlinked: list[LinkEffect] = []
        changes: list[Effect] = []
        while state.identity is not None:
            due = identity.next_expiry(state.identity, self.link_policy)
            if due is None or due > upto:
                break
            gone = self.age(customer_id, state, due)
            unlinked += gone
            changes += self.follow(customer_id, state, gone, due)
        links = state.identity
        if links is not None and (links.aged is None or links.aged < upto):
            links.aged = upto
        return unlinked, changes

    def hear(
        self, customer_id: str, state: CustomerState, report: Report
    ) -> tuple[list[LinkEffect], list[Effect]]:
        """Take a link report into the customer's links: the link effects, and what they
        change on its blacklists, both as of when the announcement it answers was made
        (`identity.heard_at`; a report made again carries the pair's older start)."""
        effects = identity.receive(state.links(), customer_id, report, self.link_policy)
        return effects, self.follow(customer_id, state, effects, identity.heard_at(report))

    def follow(
        self,
        customer_id: str,
        state: CustomerState,
        effects: Iterable[LinkEffect],
        now: datetime,
    ) -> list[Effect]:
        """What the customer's links change on its blacklists, by the shops' policies (the
        unlinks among `effects` too, when no link is left)."""
        effects = list(effects)
        if state.identity is None and not effects:
            return []
        links = state.identity if state.identity is not None else IdentityState()
        changes = identity.carry_listings(state.unpaid, links, customer_id, effects, self.extends)
        if self.shares_strikes:
            changes += identity.strikes_together(
                state.unpaid, links, customer_id, self.list_policy, now
            )
        return changes

    def alerted(self, effects: Iterable[LinkEffect]) -> list[LinkEffect]:
        """The link effects that raise alerts: a flag only for the blacklists whose shop
        wants one."""
        kept: list[LinkEffect] = []
        for effect in effects:
            if isinstance(effect, LinkedAccountFlagged):
                listings = tuple(listing for listing in effect.listings if self.flags(listing[0]))
                if not listings:
                    continue
                effect = msgspec.structs.replace(effect, listings=listings)
            kept.append(effect)
        return kept


# The stored form of an identifier's state: a version byte, then msgspec's JSON.
_IDENTIFIER_VERSION = b"\x01"
_ENCODE = msgspec.json.Encoder().encode
_DECODE_IDENTIFIER = msgspec.json.Decoder(IdentifierState).decode


class IdentifierStates:
    """The identity stage's states read and changed in the current batch.

    `read` gives a stored state's bytes. Like the customers' states, the agent sends
    the changed ones (`stage`) to the changelog with the batch's records and writes
    them to the store only once the broker confirmed them.
    """

    def __init__(self, read: Callable[[bytes], bytes | None]) -> None:
        self._read = read
        self._states: dict[bytes, IdentifierState] = {}
        self._dirty: set[bytes] = set()
        self._staged: list[tuple[bytes, bytes | None]] = []

    def load(self, key: bytes) -> IdentifierState:
        found = self._states.get(key)
        if found is None:
            stored = self._read(key)
            view = None if stored is None else unstamped(stored)
            if view is None or view[:1] != _IDENTIFIER_VERSION:
                found = IdentifierState()
            else:
                found = _DECODE_IDENTIFIER(view[1:])
            self._states[key] = found
        return found

    def snapshot(self, key: bytes) -> bytes:
        return _ENCODE(self.load(key))

    def restore(self, key: bytes, snapshot: bytes) -> None:
        self._states[key] = _DECODE_IDENTIFIER(snapshot)

    def changed(self, key: bytes) -> None:
        self._dirty.add(key)

    def stage(self, stamp: Callable[[bytes, bytes], bytes]) -> list[tuple[bytes, bytes | None]]:
        """The changed states, `stamp`ed (key, value: the stored value; None: deleted),
        for the changelog."""
        staged = []
        for key in sorted(self._dirty):
            state = self._states[key]
            value = None if state.is_empty() else stamp(key, _IDENTIFIER_VERSION + _ENCODE(state))
            staged.append((key, value))
        self._staged += staged
        self._dirty.clear()
        return staged

    def commit(self) -> list[tuple[bytes, bytes | None]]:
        writes, self._staged = self._staged, []
        self._states.clear()
        return writes

    def forget(self) -> None:
        self._states.clear()
        self._dirty.clear()
        self._staged.clear()


class InternalRecords:
    """The identity topics' records: encoded, decoded, and signed when the workers share
    keys (the first signs; any verifies, so that a new key can roll out)."""

    encode = staticmethod(_ENCODE)
    decode_sighting = staticmethod(msgspec.json.Decoder(Sighting).decode)
    decode_report = staticmethod(msgspec.json.Decoder(Report).decode)

    def __init__(self, keys: Sequence[bytes] = ()) -> None:
        self.keys = tuple(keys)

    def headers(self, topic: str, record_key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        if not self.keys:
            return []
        return [(SIGNATURE_HEADER, record_signature(self.keys[0], topic, record_key, value))]

    def authentic(
        self,
        topic: str,
        record_key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> bool:
        """Whether a record may be applied: signed with one of the keys, or no key is set."""
        return not self.keys or any(
            verify_record(key, topic, record_key, value, headers) for key in self.keys
        )
