"""The worker's wall time, taken from the broker's clock.

In live mode wall time moves the stream clocks (a tick fires what is due),
bounds how far ahead an event may be (`HITRUN_MAX_CLOCK_SKEW`) and stamps the
records the worker writes. A worker whose system clock is wrong (stepped by
hand or by a bad time server, a virtual machine resumed with a stale clock)
would then fire deadlines early and strike customers who pay on time (clock
ahead), or refuse every live event as coming from the future (clock behind),
and a clock more than an hour ahead has every record it writes refused by
the broker (`log.message.timestamp.after.max.ms`).

So the worker keeps the broker's time instead. The reroute topic is created
with `message.timestamp.type=LogAppendTime`: the broker stamps each record
appended to it with its own clock and returns that time in the produce
response. The worker writes a record there before anything else (an empty
progress mark, the sink's probe), and in live mode every progress interval.
Each delivery gives a reading: the broker's time when it appended, no later
than the time the response arrived. Between readings the time is carried
forward by the monotonic clock, which no step of the system clock moves. Of
the readings, the one that puts the time furthest on counts (each is a lower
bound), so the time never goes back.

Until the first reading (or for good, when the reroute topic keeps the
producers' times), the system clock is used, as before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

# The record timestamp type of a LogAppendTime topic, as aiokafka reports it.
LOG_APPEND_TIME = 1


class BrokerTime:
    """The broker's time as last read, carried forward by the monotonic clock."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        # Broker time (epoch ms) minus the monotonic clock (ms): now = monotonic + base.
        self._base: float | None = None

    @property
    def known(self) -> bool:
        """Has a reading come in (else the system clock is used)?"""
        return self._base is not None

    def heard(self, broker_ms: int, timestamp_type: int) -> None:
        """A record was appended at `broker_ms` by the broker's clock (taken only from a
        LogAppendTime topic: a CreateTime topic returns the producer's own time)."""
        if timestamp_type != LOG_APPEND_TIME or broker_ms < 0:
            return
        base = broker_ms - self._monotonic() * 1000.0
        if self._base is None or base > self._base:
            self._base = base

    def now_s(self) -> float:
        """Epoch seconds: the broker's time, or the system clock's until it is known."""
        base = self._base
        if base is None:
            return self._wall()
        return self._monotonic() + base / 1000.0

    def now_ms(self) -> int:
        return int(self.now_s() * 1000.0)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_s(), tz=UTC)

    def offset_s(self) -> float:
        """How far the system clock is ahead of the broker's (behind: negative); NaN until
        the broker's time is known."""
        base = self._base
        if base is None:
            return math.nan
        return self._wall() - self.now_s()


# The worker's one clock of wall time (a worker is one process).
broker_time = BrokerTime()
