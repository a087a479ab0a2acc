"""Why an input message was refused: a small hierarchy with stable reason codes."""

from __future__ import annotations


class InputRejected(Exception):
    """An input message that cannot be processed; `reason` is stable and goes on the dead letter."""

    reason = "rejected"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Oversized(InputRejected):
    reason = "oversized"


class Undecodable(InputRejected):
    """The bytes are not UTF-8."""

    reason = "undecodable"


class NotJson(InputRejected):
    reason = "not_json"


class NotAnObject(InputRejected):
    """Valid JSON, but not a JSON object (an array, a string, a number...)."""

    reason = "not_an_object"


class UnknownEventType(InputRejected):
    reason = "unknown_event_type"


class WrongTopic(InputRejected):
    """A known event type on a topic that does not carry it (a payment on the checkouts topic)."""

    reason = "wrong_topic"


class TimestampWithoutOffset(InputRejected):
    """An event time without a UTC offset is ambiguous, so it is refused rather than guessed."""

    reason = "timestamp_without_offset"


class SchemaViolation(InputRejected):
    reason = "schema_violation"


class MissingKey(InputRejected):
    reason = "missing_key"


class KeyMismatch(InputRejected):
    """The record key disagrees with the body's customer_id, so the partition cannot be trusted."""

    reason = "key_mismatch"


class LateEvent(InputRejected):
    """Older than its partition's event time by more than the allowed lateness."""

    reason = "late_event"


class ProcessingError(InputRejected):
    """Applying a valid-looking message raised (a bug, a corrupt stored state): the message is
    set aside with the exception, the customer's state stays as it was, the partition goes on."""

    reason = "processing_error"


class FromFuture(InputRejected):
    """Live mode: an event time further ahead of wall time than the allowed clock skew."""

    reason = "from_future"


class Unauthenticated(InputRejected):
    """A message only an authenticated writer may send (a watermark) without a valid signature."""

    reason = "unauthenticated"


class EventIdReused(InputRejected):
    """An event whose event_id the customer's events already used for an event with other
    content: dropped as a duplicate, it would vanish (a payment then leaves its order to
    expire)."""

    reason = "event_id_reused"


class Misrouted(InputRejected):
    """Still in the wrong partition after being rerouted once: a partition-count mismatch."""

    reason = "misrouted"


REASONS: tuple[str, ...] = tuple(
    cls.reason
    for cls in (
        Oversized,
        Undecodable,
        NotJson,
        NotAnObject,
        UnknownEventType,
        WrongTopic,
        TimestampWithoutOffset,
        SchemaViolation,
        MissingKey,
        KeyMismatch,
        LateEvent,
        Misrouted,
        ProcessingError,
        FromFuture,
        Unauthenticated,
        EventIdReused,
    )
)
