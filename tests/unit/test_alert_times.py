"""An alert's times are written exactly as `datetime.isoformat` writes them, in every zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from hitrun.agents.alerts import _ts

ZONES = [
    UTC,
    timezone(timedelta(0)),
    timezone(timedelta(hours=7)),
    timezone(timedelta(hours=-5, minutes=-30)),
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-23, minutes=-59)),
    # Offsets with seconds, which msgspec would round to the minute.
    timezone(timedelta(seconds=25)),
    timezone(timedelta(hours=5, minutes=30, seconds=12)),
    timezone(timedelta(hours=-1, microseconds=-7)),
    ZoneInfo("Asia/Jakarta"),  # +07:07:12 before 1924
    ZoneInfo("America/New_York"),
    None,
]


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.sampled_from(ZONES),
)
def test_an_alert_time_is_written_as_isoformat_writes_it(
    moment: datetime, zone: timezone | ZoneInfo | None
) -> None:
    aware = moment.replace(tzinfo=zone)
    assert _ts(aware) == aware.isoformat()


def test_whole_seconds_and_microseconds_are_written_alike() -> None:
    for micro in (0, 1, 1000, 100_000, 999_999):
        for zone in ZONES:
            moment = datetime(2024, 6, 1, 10, 0, 0, micro, tzinfo=zone)
            assert _ts(moment) == moment.isoformat()
