"""Reads a historical transactions file (CSV or whitespace-separated) into hitrun input events."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Context, Decimal, Inexact
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from hitrun.schemas.records import EARLIEST_TIME, LATEST_TIME, PaymentMethod
from hitrun.streams.simulate import SimMessage

# The contract's largest amount (`money` in common.v1.schema.json).
MAX_AMOUNT_MINOR = 1_000_000_000_000
# A replayed checkout is due a day after it is placed, so it can never expire
# before its own payment (stamped at the same instant), whatever the windows.
PAYMENT_DUE_AFTER = timedelta(days=1)
PAYMENT_METHODS: frozenset[str] = frozenset(get_args(PaymentMethod))
LABEL = "replay"

# Why a row was refused; stable codes for callers to count or filter by.
LINE_REASONS = (
    "malformed_row",  # the CSV parser cannot read it (a stray or unbalanced quote)
    "too_few_fields",
    "empty_customer_id",
    "invalid_customer_id",  # whitespace, control characters or over 128 characters
    "empty_order_id",
    "invalid_order_id",
    "unparseable_time",
    "unparseable_amount",
    "not_a_purchase",  # zero or negative: a return or cancellation
    "too_many_decimals",  # more (non-zero) decimal places than the currency has
    "amount_out_of_range",  # over MAX_AMOUNT_MINOR, alone or summed into its order
    "order_customer_mismatch",  # the order id already belongs to another customer
)

_MAX_IDENTIFIER = 128
_SHOWN_CHARS = 200
_POSITION = re.compile(r"[1-9][0-9]*", re.ASCII)
_COMPACT_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})", re.ASCII)
# Plain decimal notation only: no exponent, no digit grouping, no currency sign.
_AMOUNT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
# Wide enough that only digits past any currency's minor unit can be lost.
_EXACT = Context(prec=60, traps=[Inexact])
# Later times leave no room for their checkout's deadline.
# Event times outside hitrun's supported range are refused by the worker too.
_LATEST = LATEST_TIME


class TransactionFileError(Exception):
    """The file as a whole cannot be read: unreadable, not UTF-8, or a chosen column is missing."""


@dataclass(frozen=True)
class FileFormat:
    """How to read a transactions file.

    Columns are chosen by header name, or by 1-based position given as a string
    ("1"); a file without a header allows positions only. `date_format` is a
    `strptime` format; without one, times are ISO 8601 (a date or a date-time,
    `Z` allowed) or YYYYMMDD. Times without an offset are in `time_zone`.
    """

    delimiter: str | None = ","  # None: any run of whitespace, no quoting
    header: bool = True
    customer: str = "customer_id"
    time: str = "timestamp"
    amount: str = "amount"
    order: str | None = None  # None: each row is one order
    date_format: str | None = None
    time_zone: str = "UTC"
    currency: str = "USD"
    minor_digits: int = 2  # "12.5" is 1250 minor units with 2

    def __post_init__(self) -> None:
        if self.delimiter is not None and (len(self.delimiter) != 1 or self.delimiter in '\r\n"'):
            raise ValueError(f"delimiter must be one character or None, not {self.delimiter!r}")
        chosen = [self.customer, self.time, self.amount]
        if self.order is not None:
            chosen.append(self.order)
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"the customer, time, amount and order columns overlap: {chosen}")
        for spec in chosen:
            if not spec.strip():
                raise ValueError("a column name cannot be empty")
            if not self.header and not _POSITION.fullmatch(spec):
                raise ValueError(
                    f"column {spec!r} must be a 1-based position when the file has no header"
                )
        _zone(self.time_zone)
        if not _CURRENCY.fullmatch(self.currency):
            raise ValueError(
                f"currency must be an ISO 4217 code such as USD, not {self.currency!r}"
            )
        # ISO 4217 currencies have 0 to 4 decimal places (CLF and UYW have 4).
        if not 0 <= self.minor_digits <= 4:
            raise ValueError(f"minor_digits must be between 0 and 4, not {self.minor_digits}")


@dataclass(frozen=True, slots=True)
class Transaction:
    """One purchase: who, when (aware, UTC), how much, and under which order id."""

    line: int  # the first line of the file that makes it up
    customer_id: str
    order_id: str
    at: datetime
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class LineError:
    """A refused row: its line number, a reason from LINE_REASONS, the detail, and its text."""

    line: int
    reason: str
    detail: str
    text: str  # the row as written, cut to 200 characters


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a file gave: purchases in (at, line) order, refused rows in line order."""

    transactions: list[Transaction]
    errors: list[LineError]
    rows: int  # data rows read, blank lines and the header not counted
    digest: str  # a short hash of the file's bytes, e.g. the `source` of its events


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    text: str
    fields: list[str] | None  # None when the row could not be split into fields
    problem: str = ""


@dataclass(frozen=True, slots=True)
class _Columns:
    customer: int
    time: int
    amount: int
    order: int | None

    @property
    def needed(self) -> int:
        return max(i for i in (self.customer, self.time, self.amount, self.order) if i is not None)


@dataclass(slots=True)
class _Order:
    line: int
    customer_id: str
    at: datetime
    amount_minor: int


def read_transactions(path: Path, fmt: FileFormat) -> ReadResult:
    """Read every purchase in the file; refused rows are returned, not raised.

    Rows sharing an order id (with an `order` column) form one purchase: the
    amounts summed, at the earliest row's time. Without an order column each
    row is a purchase, and its order id is its UTC time and its rank among the
    customer's rows at that instant: `19970101T050000Z-1`.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TransactionFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TransactionFileError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from None
    rows = (row for row in _rows(text, fmt.delimiter) if row.text.strip())
    if fmt.header:
        columns = _resolve_header(next(rows, None), fmt, path)
    else:
        columns = _Columns(
            _position(fmt.customer),
            _position(fmt.time),
            _position(fmt.amount),
            None if fmt.order is None else _position(fmt.order),
        )
    reader = _Reader(fmt, columns)
    for row in rows:
        reader.add(row)
    reader.transactions.sort(key=_in_time_order)
    return ReadResult(reader.transactions, reader.errors, reader.rows, _digest(data))


# A checkout and its succeeded payment.
EVENTS_PER_TRANSACTION = 2


def transaction_events(
    transactions: Iterable[Transaction],
    *,
    source: str,
    shop_id: str = "replay",
    payment_method: str = "card",
) -> Iterator[SimMessage]:
    """A checkout and its succeeded payment per purchase, in (at, line) order.

    Event ids are hashes of `source`, the shop, the customer, the order and the
    event type: the same file with the same `source` gives byte-identical
    messages on every run, so hitrun drops a second replay by event id.
    """
    if not _is_identifier(shop_id):
        raise ValueError(f"shop_id must be 1-128 characters without whitespace, not {shop_id!r}")
    if payment_method not in PAYMENT_METHODS:
        raise ValueError(
            f"payment_method must be one of {', '.join(sorted(PAYMENT_METHODS))}, "
            f"not {payment_method!r}"
        )
    # Sorted before the first message is asked for, so a bad argument fails here and now.
    ordered = sorted(transactions, key=_in_time_order)
    return _events(ordered, source, shop_id, payment_method)


def _events(
    ordered: list[Transaction], source: str, shop_id: str, payment_method: str
) -> Iterator[SimMessage]:
    for tx in ordered:
        key = tx.customer_id.encode()
        occurred_at = tx.at.isoformat()
        money = {"amount_minor": tx.amount_minor, "currency": tx.currency}
        checkout = {
            "type": "checkout_confirmed",
            "event_id": _event_id(source, shop_id, tx, "checkout_confirmed"),
            "customer_id": tx.customer_id,
            "shop_id": shop_id,
            "occurred_at": occurred_at,
            "order_id": tx.order_id,
            "total": money,
            "payment_method": payment_method,
            "payment_due_at": (tx.at + PAYMENT_DUE_AFTER).isoformat(),
        }
        payment = {
            "type": "payment_attempted",
            "event_id": _event_id(source, shop_id, tx, "payment_attempted"),
            "customer_id": tx.customer_id,
            "shop_id": shop_id,
            "occurred_at": occurred_at,
            "order_id": tx.order_id,
            "status": "succeeded",
            "amount": money,
            "method": payment_method,
        }
        yield SimMessage("checkouts", key, orjson.dumps(checkout), tx.at, tx.customer_id, LABEL)
        yield SimMessage("payments", key, orjson.dumps(payment), tx.at, tx.customer_id, LABEL)


def _event_id(source: str, shop_id: str, tx: Transaction, event_type: str) -> str:
    # A JSON array keeps the parts apart whatever characters they contain.
    material = orjson.dumps([source, shop_id, tx.customer_id, tx.order_id, event_type])
    return f"replay-{hashlib.blake2b(material, digest_size=16).hexdigest()}"


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


# (at, line): sorting 70,000 purchases by a C-level key instead of a Python function's.
_in_time_order: Callable[[Transaction], tuple[datetime, int]] = operator.attrgetter("at", "line")


# ---------------------------------------------------------------------------
# Rows and columns


def _rows(text: str, delimiter: str | None) -> Iterator[_Row]:
    """Every row with its first line number; blank ones too (the caller drops them)."""
    # newline="" keeps line ends as written, as the csv module wants.
    lines = list(io.StringIO(text, newline=""))
    if delimiter is None:
        for number, line in enumerate(lines, start=1):
            yield _Row(number, line, line.split())
        return
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    consumed = 0
    while True:
        first = consumed + 1
        try:
            fields: list[str] | None = next(reader)
            problem = ""
        except StopIteration:
            return
        except csv.Error as exc:
            fields, problem = None, str(exc)
        consumed = reader.line_num
        yield _Row(first, "".join(lines[first - 1 : consumed]), fields, problem)


def _position(spec: str) -> int:
    return int(spec) - 1


def _resolve_header(row: _Row | None, fmt: FileFormat, path: Path) -> _Columns:
    if row is None:
        raise TransactionFileError(f"{path} is empty: expected a header line")
    if row.fields is None:
        raise TransactionFileError(f"{path}:{row.line}: cannot read the header: {row.problem}")
    names = [name.strip() for name in row.fields]
    found = ", ".join(repr(n) for n in names)

    def index(spec: str) -> int | None:
        if names.count(spec) > 1:
            raise TransactionFileError(
                f"{path}:{row.line}: column {spec!r} appears more than once in the header"
            )
        if spec in names:
            return names.index(spec)
        if _POSITION.fullmatch(spec) and int(spec) <= len(names):
            return _position(spec)
        return None

    specs = {"customer": fmt.customer, "time": fmt.time, "amount": fmt.amount}
    if fmt.order is not None:
        specs["order"] = fmt.order
    indices = {role: index(spec) for role, spec in specs.items()}
    missing = [f"{specs[role]!r} ({role})" for role, i in indices.items() if i is None]
    if missing:
        raise TransactionFileError(
            f"{path}:{row.line}: no column {', '.join(missing)} in the header; found: {found}"
        )
    chosen = {role: i for role, i in indices.items() if i is not None}
    if len(set(chosen.values())) != len(chosen):
        raise TransactionFileError(
            f"{path}:{row.line}: two roles name the same column: {specs}; header: {found}"
        )
    return _Columns(chosen["customer"], chosen["time"], chosen["amount"], chosen.get("order"))


# ---------------------------------------------------------------------------
# Values


class _Reader:
    """Turns rows into purchases, grouping them by order id when the file has one."""

    def __init__(self, fmt: FileFormat, columns: _Columns) -> None:
        self.fmt = fmt
        self.columns = columns
        self.needed = columns.needed
        self.zone = _zone(fmt.time_zone)
        self.transactions: list[Transaction] = []
        self.errors: list[LineError] = []
        self.rows = 0
        self._orders: dict[str, _Order] = {}
        self._order_positions: dict[str, int] = {}
        self._same_instant: Counter[tuple[str, datetime]] = Counter()

    def add(self, row: _Row) -> None:
        self.rows += 1
        try:
            self._add(row)
        except _Rejected as exc:
            self.errors.append(LineError(row.line, exc.reason, exc.detail, _shown(row.text)))

    def _add(self, row: _Row) -> None:
        if row.fields is None:
            raise _Rejected("malformed_row", row.problem)
        cols, fields = self.columns, row.fields
        if len(fields) <= self.needed:
            raise _Rejected(
                "too_few_fields", f"expected at least {self.needed + 1} fields, found {len(fields)}"
            )
        customer = _identifier(fields[cols.customer], "customer_id")
        order = None if cols.order is None else _identifier(fields[cols.order], "order_id")
        at = _parse_time(fields[cols.time].strip(), self.fmt.date_format, self.zone)
        amount = _parse_amount(fields[cols.amount].strip(), self.fmt.minor_digits)
        if order is None:
            # Named by what the row says, not by where it sits: appending rows
            # or splitting the file keeps every id, and purchases from two
            # files never share one (hitrun ignores a checkout for an order id
            # the customer already has, so a clash would lose a purchase).
            self._same_instant[customer, at] += 1
            order_id = f"{_compact(at)}-{self._same_instant[customer, at]}"
            self.transactions.append(
                Transaction(row.line, customer, order_id, at, amount, self.fmt.currency)
            )
        else:
            self._add_to_order(row.line, order, customer, at, amount)

    def _add_to_order(
        self, line: int, order_id: str, customer: str, at: datetime, amount: int
    ) -> None:
        order = self._orders.get(order_id)
        if order is None:
            self._orders[order_id] = _Order(line, customer, at, amount)
            self._order_positions[order_id] = len(self.transactions)
            self.transactions.append(
                Transaction(line, customer, order_id, at, amount, self.fmt.currency)
            )
            return
        if customer != order.customer_id:
            raise _Rejected(
                "order_customer_mismatch",
                f"order {order_id!r} belongs to customer {order.customer_id!r} "
                f"(line {order.line}), not {customer!r}",
            )
        if order.amount_minor + amount > MAX_AMOUNT_MINOR:
            raise _Rejected(
                "amount_out_of_range",
                f"order {order_id!r} would total {order.amount_minor + amount} minor units, "
                f"over {MAX_AMOUNT_MINOR}",
            )
        order.amount_minor += amount
        order.at = min(order.at, at)
        self.transactions[self._order_positions[order_id]] = Transaction(
            order.line, customer, order_id, order.at, order.amount_minor, self.fmt.currency
        )


def _identifier(raw: str, name: str) -> str:
    value = raw.strip()
    if not value:
        raise _Rejected(f"empty_{name}", f"{name} is empty")
    if not _is_identifier(value):
        raise _Rejected(
            f"invalid_{name}",
            f"{name} {value[:64]!r} must be 1-{_MAX_IDENTIFIER} printable characters "
            "without whitespace",
        )
    return value


def _is_identifier(value: str) -> bool:
    # The contract's `identifier`: 1-128 characters, no whitespace; control
    # characters are refused too, since no shop means them.
    # Of the whitespace characters, only the ASCII space is printable.
    return 0 < len(value) <= _MAX_IDENTIFIER and value.isprintable() and " " not in value


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name)") from None


# Files repeat their times (a day's purchases share its date): each distinct text
# is parsed once. A refused one raises every time (exceptions are not cached).
@functools.lru_cache(maxsize=4096)
def _parse_time(text: str, date_format: str | None, zone: tzinfo) -> datetime:
    """An aware UTC datetime; a time without an offset is read in `zone`."""
    try:
        if date_format is not None:
            moment = datetime.strptime(text, date_format)  # noqa: DTZ007 (the zone follows)
        elif match := _COMPACT_DATE.fullmatch(text):
            year, month, day = (int(part) for part in match.groups())
            moment = datetime(year, month, day)  # noqa: DTZ001 (the zone follows)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        expected = date_format or "ISO 8601 or YYYYMMDD"
        raise _Rejected("unparseable_time", f"{text[:64]!r} is not a time ({expected})") from None
    if moment.tzinfo is None:
        # A wall time that summer time skips or repeats takes the offset in
        # force before the change (zoneinfo's fold=0): a file cannot say which.
        moment = moment.replace(tzinfo=zone)
    try:
        at = moment.astimezone(UTC)
    except OverflowError:
        at = _LATEST
    if not EARLIEST_TIME <= at < _LATEST:
        raise _Rejected("unparseable_time", f"{text[:64]!r} is out of range")
    return at


def _parse_amount(text: str, minor_digits: int) -> int:
    """Exact integer minor units of a positive decimal amount."""
    if not _AMOUNT.fullmatch(text):
        raise _Rejected("unparseable_amount", f"{text[:64]!r} is not a decimal amount")
    value = Decimal(text)  # exact: a Decimal built from a string is never rounded
    if value <= 0:
        raise _Rejected(
            "not_a_purchase", f"amount {text[:64]} is not positive (a return or a cancellation)"
        )
    if value > Decimal(MAX_AMOUNT_MINOR).scaleb(-minor_digits):
        raise _Rejected("amount_out_of_range", f"amount {text[:64]} is over the contract's maximum")
    try:
        minor: Decimal | None = value.scaleb(minor_digits, _EXACT)
    except Inexact:
        minor = None  # non-zero digits far past the minor unit
    if minor is None or minor != minor.to_integral_value():
        raise _Rejected(
            "too_many_decimals",
            f"amount {text[:64]} has more than {minor_digits} decimal place(s)",
        )
    return int(minor)


@functools.lru_cache(maxsize=4096)
def _compact(at: datetime) -> str:  # `at` in UTC, as _parse_time gives it
    # What f"{at:%Y%m%dT%H%M%S}" gives (the year unpadded, as glibc writes it), without strftime.
    fraction = f".{at.microsecond:06d}" if at.microsecond else ""
    return (
        f"{at.year}{at.month:02d}{at.day:02d}T{at.hour:02d}{at.minute:02d}{at.second:02d}"
        f"{fraction}Z"
    )


def _shown(text: str) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


# -- guessing a file's layout -------------------------------------------------------------

# Header names (compared without case, spaces, dashes or underscores) that usually mean
# each column, in order of preference.
_COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "customer": (
        "customerid",
        "customer",
        "custid",
        "clientid",
        "client",
        "buyerid",
        "userid",
        "memberid",
        "customerno",
        "customernumber",
        "accountid",
    ),
    "time": (
        "timestamp",
        "datetime",
        "date",
        "time",
        "invoicedate",
        "orderdate",
        "purchasedate",
        "transactiondate",
        "transactiontime",
        "createdat",
        "ts",
    ),
    "amount": (
        "amount",
        "total",
        "ordertotal",
        "totalamount",
        "value",
        "price",
        "sales",
        "revenue",
        "transactionamount",
        "amountusd",
    ),
    "order": ("orderid", "invoice", "invoiceno", "invoiceid", "transactionid", "orderno"),
}
# strptime formats tried, in this order, when the times are not ISO 8601 or YYYYMMDD.
_DATE_FORMATS = (
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M:%S",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%d %b %Y",
    "%b %d %Y",
    "%Y%m%d %H%M%S",
    "%Y%m%d%H%M%S",
)
_SAMPLE_ROWS = 2_000


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name).lower()


def guess_format(
    path: Path, fmt: FileFormat, given: frozenset[str]
) -> tuple[FileFormat, list[str]]:
    """Fill in what the caller did not give (`given` names FileFormat fields set by hand) from
    the file's first line and first rows: the delimiter, the customer, time, amount and
    order columns, and the date format. Returns the format and one line per guess.

    Nothing is guessed for a file without a header, and a guess never replaces a value
    the caller gave; when nothing fits, the default stays and reading it names the problem.
    """
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            head = [line for _, line in zip(range(_SAMPLE_ROWS + 1), handle, strict=False)]
    except OSError:
        return fmt, []  # read_transactions names the problem
    lines = [line for line in head if line.strip()]
    if not lines or not fmt.header:
        return fmt, []
    notes: list[str] = []
    changes: dict[str, Any] = {}
    delimiter = fmt.delimiter
    if "delimiter" not in given:
        delimiter = _guess_delimiter(lines[0], fmt.delimiter)
        if delimiter != fmt.delimiter:
            changes["delimiter"] = delimiter
            shown = "whitespace" if delimiter is None else repr(delimiter)
            notes.append(f"delimiter: {shown} (guessed from the header)")
    rows = [row.fields for row in _rows("".join(lines), delimiter) if row.fields]
    names = [name.strip() for name in rows[0]] if rows else []
    data = rows[1:]
    normal = [_normal(name) for name in names]
    taken = {getattr(fmt, role) for role in ("customer", "time", "amount") if role in given}
    for role in ("customer", "time", "amount", "order"):
        current = getattr(fmt, role)
        if role in given or (current is not None and current in names):
            continue
        for candidate in _COLUMN_NAMES[role]:
            if candidate in normal and names[normal.index(candidate)] not in taken:
                chosen = names[normal.index(candidate)]
                changes[role] = chosen
                taken.add(chosen)
                notes.append(f"{role} column: {chosen!r} (guessed from the header)")
                break
    time_column: str = changes.get("time", fmt.time)
    if "date_format" not in given and time_column in names:
        column = names.index(time_column)
        samples = [row[column].strip() for row in data if len(row) > column and row[column].strip()]
        found, note = _guess_date_format(samples, _zone(fmt.time_zone))
        if found is not None:
            changes["date_format"] = found
            notes.append(note)
    if not changes:
        return fmt, notes
    return replace(fmt, **changes), notes


def _guess_delimiter(header: str, default: str | None) -> str | None:
    if default is not None and default in header:
        return default
    for candidate in (",", ";", "\t", "|"):
        if candidate in header:
            return candidate
    return None if len(header.split()) > 1 else default


def _guess_date_format(samples: list[str], zone: tzinfo) -> tuple[str | None, str]:
    """A strptime format every sample parses with; None when the default reading fits."""
    if not samples:
        return None, ""

    def parses(date_format: str | None) -> bool:
        try:
            for text in samples:
                _parse_time(text, date_format, zone)
        except _Rejected:
            return False
        return True

    if parses(None):
        return None, ""
    fitting = [f for f in _DATE_FORMATS if parses(f)]
    if not fitting:
        return None, ""
    note = f"date format: {fitting[0]!r} (guessed from {len(samples)} rows"
    if len(fitting) > 1:
        note += f"; {fitting[1]!r} fits too: give --date-format if that is the one"
    return fitting[0], note + ")"
