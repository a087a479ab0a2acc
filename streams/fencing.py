"""Writer tokens on the state records: a removed worker's records that land late are not read.

A worker the group removed (stalled past its session timeout) may still have
state records on their way when its successor has begun writing the same
changelog partition (docs/reliability.md, "Stalled workers"). The successor
writes its own values over them (streams/repair.py), but until it does, a
worker recovering the partition, or a standby reading it, takes the stale
values as the latest: a recovery then starts from states that miss what the
successor applied.

So every state record names its writer's token for the partition (`HEADER`):
the group generation the worker was assigned the partition in, or the highest
token it has read or written of the partition if that is higher. The
partition's writers follow one another, each one assigned in a later
generation than the one before it, so along the changelog their tokens never
go down; and a successor's generation is above that of the worker removed
before it, whether or not it read anything of that worker's. A record whose
token is below one read before it in the same partition is therefore a
removed writer's, landed after its successor's records: a reader skips it
(`WriterTokens.admit`). Nothing else ever is: a record equal to the highest
before it is read. When the group starts again from generation 0 (its
metadata expired while no worker ran), the tokens stay at the highest one read
until the generations pass it: late records are then not told apart, as
before tokens existed, rather than a successor's records taken for late ones.
Records without a token (written before tokens existed, or by a tool) are
always read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

HEADER = "hitrun-writer"

# Where the token last rose in a partition, read or written: (offset, token).
Rise = tuple[int, int]


def token_of(headers: Iterable[tuple[str, bytes]] | None) -> int | None:
    """The writer token a record's headers name (None: none, or not a number)."""
    for name, value in headers or ():
        if name == HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


@dataclass
class WriterTokens:
    """Per changelog partition: where the writer token rose along the records read (and
    written) here, and this worker's own token.

    `stored` gives the last rise a persistent store kept (None: none), read the
    first time a partition is met; `store` keeps a new one. A rise is a true
    statement about the changelog whenever it is kept, so a store may keep it
    apart from its offsets.
    """

    stored: Callable[[int], Rise | None] = lambda partition: None
    store: Callable[[int, Rise], None] = lambda partition, rise: None
    _rises: dict[int, list[Rise]] = field(default_factory=dict)
    # The highest token read or written of each partition, never lowered (a rise read
    # again is forgotten, a token once seen is not).
    _highest: dict[int, int] = field(default_factory=dict)
    # This worker's token of each partition, and the generation it was taken in.
    _own: dict[int, tuple[int, int]] = field(default_factory=dict)
    _headers: dict[int, tuple[tuple[str, bytes], ...]] = field(default_factory=dict)

    def _rises_of(self, partition: int) -> list[Rise]:
        rises = self._rises.get(partition)
        if rises is None:
            rises = self._rises[partition] = []
            kept = self.stored(partition)
            if kept is not None:
                rises.append(kept)
                self._raise(partition, kept[1])
        return rises

    def _raise(self, partition: int, token: int) -> None:
        if token > self._highest.get(partition, -1):
            self._highest[partition] = token

    def admit(self, partition: int, offset: int, token: int | None) -> bool:
        """Whether the record at `offset` of `partition`, of writer `token`, is to be read.

        Records are read in offset order; reading from an earlier offset again (a
        recovery, a standby sent back) forgets the rises from there on.
        """
        rises = self._rises_of(partition)
        while rises and rises[-1][0] >= offset:
            rises.pop()
        if token is None:
            return True
        if rises:
            floor = rises[-1][1]
            if token < floor:
                return False
            if token == floor:
                return True
        rises.append((offset, token))
        self._raise(partition, token)
        self.store(partition, (offset, token))
        return True

    def wrote(self, partition: int, offset: int) -> None:
        """This worker's records of `partition` (named with its `token`) landed up to
        `offset`."""
        own = self._own.get(partition)
        if own is None:
            return
        token = own[1]
        rises = self._rises_of(partition)
        if not rises or token > rises[-1][1]:
            rises.append((offset, token))
            self.store(partition, (offset, token))
        self._raise(partition, token)

    def token(self, partition: int, generation: int) -> int:
        """This worker's token for `partition`, assigned in `generation`."""
        own = self._own.get(partition)
        if own is not None and own[0] == generation:
            return own[1]
        self._rises_of(partition)  # a stored rise counts
        # Not one more than the highest: a worker that read a partition it does not own
        # (a standby) and wrote a state of it would rank above the owner's records.
        token = max(generation, self._highest.get(partition, generation))
        self._own[partition] = (generation, token)
        return token

    def headers(self, partition: int, generation: int) -> tuple[tuple[str, bytes], ...]:
        """The headers of this worker's state records of `partition`."""
        token = self.token(partition, generation)
        headers = self._headers.get(token)
        if headers is None:
            headers = self._headers[token] = ((HEADER, str(token).encode()),)
        return headers
