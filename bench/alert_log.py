"""Cost of logging live alerts: a console line per alert (the baseline, and what
HITRUN_ALERT_LOG_INTERVAL=0s does) against counts by type per interval (the default),
in the same run, through the worker's console formatter to /dev/null.

    python -m bench.alert_log [--alerts N] [--repeat R]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

from hitrun.streams.logs import AlertCounts, ConsoleFormatter


def _logger() -> logging.Logger:
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  (lives with the run)
    handler.setFormatter(ConsoleFormatter())
    logger = logging.getLogger("hitrun.bench.alert_log")
    logger.setLevel(logging.INFO)
    logger.handlers = [handler]
    logger.propagate = False
    return logger


def _per_alert_us(counts: AlertCounts, alerts: int) -> float:
    started = time.perf_counter()
    for n in range(alerts):
        counts.note("order_expired" if n % 4 else "payment_reminder", f"cust-{n}", f"alert-{n}")
    counts.flush(force=True)
    return (time.perf_counter() - started) / alerts * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logger = _logger()
    line, counted = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine
        line.append(_per_alert_us(AlertCounts(logger, 0.0), args.alerts))
        counted.append(_per_alert_us(AlertCounts(logger, 10.0), args.alerts))
    a, b = statistics.median(line), statistics.median(counted)
    print(f"a line per alert (baseline): {a:.2f} us/alert (median of {args.repeat})")
    print(f"counts per interval:         {b:.2f} us/alert")
    print(f"ratio: {a / b:.1f}x less time per alert")


if __name__ == "__main__":
    main()
