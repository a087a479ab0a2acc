"""Signed watermarks: only hitrun's replay tool may move a partition's clock without an event.

A watermark says "nothing older follows in this topic partition"; any
producer could write one stamped in 2999 and expire every open order of the
partition. So the replay tool signs each watermark with HMAC-SHA256 over its
topic, partition, time and source, with a key the workers share
(`HITRUN_WATERMARK_KEY`), and a worker accepts only watermarks whose
signature it can check; the signature binds a watermark to the partition it
was written to.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

_CONTEXT = b"hitrun-watermark/v1"


def signature(key: bytes, topic: str, partition: int, at: datetime, source: str | None) -> str:
    """The hex HMAC-SHA256 of a watermark's coordinates and content."""
    message = b"\n".join(
        (
            _CONTEXT,
            topic.encode(),
            str(partition).encode(),
            at.isoformat().encode(),
            (source or "").encode(),
        )
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(
    key: bytes | None,
    topic: str,
    partition: int,
    at: datetime,
    source: str | None,
    signed: str | None,
) -> str | None:
    """None when the signature is good; otherwise why the watermark is refused."""
    if key is None:
        return "this worker has no HITRUN_WATERMARK_KEY, so it accepts no watermark"
    if not signed:
        return "an unsigned watermark (only hitrun's replay tool may write watermarks)"
    expected = signature(key, topic, partition, at, source)
    if not hmac.compare_digest(expected.encode(), signed.encode("ascii", "replace")):
        return "a watermark with a bad signature"
    return None
