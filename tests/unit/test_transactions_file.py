"""A transactions file becomes purchases, bad rows are named by line, and replays are identical."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitrun.schemas.records import CheckoutConfirmed, PaymentAttempted
from hitrun.streams.codec import decode_input
from hitrun.streams.simulate import ROLES, SimMessage
from hitrun.streams.transactions import (
    LINE_REASONS,
    MAX_AMOUNT_MINOR,
    FileFormat,
    LineError,
    ReadResult,
    Transaction,
    TransactionFileError,
    _compact,
    _is_identifier,
    read_transactions,
    transaction_events,
)

# The classic layout: customer id, date, quantity, amount; no header.
WHITESPACE = FileFormat(delimiter=None, header=False, customer="1", time="2", amount="4")
ORDERS = FileFormat(order="order_id")

# What hitrun's ingest accepts on each input topic role.
ROLE_TYPES = {
    "checkouts": frozenset({"checkout_confirmed"}),
    "payments": frozenset({"payment_attempted"}),
}


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def write(directory: Path, text: str, name: str = "transactions.csv") -> Path:
    path = directory / name
    path.write_bytes(text.encode())
    return path


def read(directory: Path, text: str, fmt: FileFormat | None = None) -> ReadResult:
    return read_transactions(write(directory, text), fmt or FileFormat())


def reasons(result: ReadResult) -> list[tuple[int, str]]:
    return [(e.line, e.reason) for e in result.errors]


def ingest(messages: Iterable[SimMessage]) -> list[CheckoutConfirmed | PaymentAttempted]:
    """Every message through hitrun's own decoder, on the topic its role names."""
    records = []
    for m in messages:
        record = decode_input(m.value, m.key, ROLE_TYPES[m.role], 65536)
        assert isinstance(record, CheckoutConfirmed | PaymentAttempted)
        records.append(record)
    return records


def tx(line: int, customer: str, moment: datetime, amount: int) -> Transaction:
    return Transaction(line, customer, f"ord-{line}", moment, amount, "USD")


# ---------------------------------------------------------------------------
# Reading


def test_csv_columns_are_chosen_by_name_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "amount,note,customer_id,timestamp\n"
        "12.50,first,alice,2024-03-01T10:00:00Z\n"
        '1000.5,"has, a comma",bob,2024-03-02T11:30:00+00:00\n',
    )
    assert result.errors == []
    assert result.rows == 2
    assert [
        (t.line, t.customer_id, t.at, t.amount_minor, t.currency) for t in result.transactions
    ] == [
        (2, "alice", at(2024, 3, 1, 10), 1250, "USD"),
        (3, "bob", at(2024, 3, 2, 11, 30), 100050, "USD"),
    ]


def test_whitespace_file_reads_columns_by_position_with_yyyymmdd_dates(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "00001 19970101 1 11.77\n"
        "00002  19970112\t1   12.00\n"
        "00002 19970112 5 77.00\n"
        "00003 19970102 2 20.76\n",
        WHITESPACE,
    )
    assert result.errors == []
    # Leading zeros belong to the id: customers are strings, never numbers.
    assert [(t.line, t.customer_id, t.at, t.amount_minor) for t in result.transactions] == [
        (1, "00001", at(1997, 1, 1), 1177),
        (4, "00003", at(1997, 1, 2), 2076),
        (2, "00002", at(1997, 1, 12), 1200),
        (3, "00002", at(1997, 1, 12), 7700),
    ]


def test_purchases_come_sorted_by_time_then_line(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "customer_id,timestamp,amount\n"
        "c1,2024-01-02T00:00:00Z,1\n"
        "c2,2024-01-02T08:00:00+08:00,1\n"
        "c3,2024-01-01T23:00:00-02:00,1\n"
        "c4,2024-01-01,1\n"
        "c5,2024-01-02T00:00:00Z,1\n",
    )
    assert [(t.at, t.line) for t in result.transactions] == [
        (at(2024, 1, 1), 5),
        (at(2024, 1, 2), 2),
        (at(2024, 1, 2), 3),
        (at(2024, 1, 2), 6),
        (at(2024, 1, 2, 1), 4),
    ]


def test_positions_also_choose_columns_in_a_file_with_a_header(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "who;when;what\nalice;2024-01-01;9.99\n",
        FileFormat(delimiter=";", customer="1", time="when", amount="3"),
    )
    assert [(t.customer_id, t.at, t.amount_minor) for t in result.transactions] == [
        ("alice", at(2024, 1, 1), 999)
    ]


def test_a_header_name_that_looks_like_a_position_is_a_name(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "2,1,3\n2024-01-01,alice,5\n",
        FileFormat(customer="1", time="2", amount="3"),
    )
    assert [(t.customer_id, t.at) for t in result.transactions] == [("alice", at(2024, 1, 1))]


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        # Dates and times without an offset are read in the file's zone.
        ("2024-01-01", "UTC", at(2024, 1, 1)),
        ("20240101", "UTC", at(2024, 1, 1)),
        ("2024-01-01", "Asia/Jakarta", at(2023, 12, 31, 17)),
        ("19970101", "America/New_York", at(1997, 1, 1, 5)),
        ("2024-07-01T12:00:00", "Europe/Berlin", at(2024, 7, 1, 10)),
        ("2024-01-01T12:00:00", "Europe/Berlin", at(2024, 1, 1, 11)),
        ("2024-01-01 08:30", "Asia/Jakarta", at(2024, 1, 1, 1, 30)),
        # Summer time: a skipped or repeated wall time takes the offset before the change.
        ("2024-03-10T02:30:00", "America/New_York", at(2024, 3, 10, 7, 30)),
        ("2024-11-03T01:30:00", "America/New_York", at(2024, 11, 3, 5, 30)),
        # An offset in the file wins over the zone.
        ("2024-01-01T10:00:00+07:00", "America/New_York", at(2024, 1, 1, 3)),
        ("2024-01-01T10:00:00Z", "Asia/Jakarta", at(2024, 1, 1, 10)),
        ("2024-01-01T10:00:00-05:30", "UTC", at(2024, 1, 1, 15, 30)),
        ("2024-01-01T10:00:00.123456Z", "UTC", at(2024, 1, 1, 10, 0, 0, 123456)),
    ],
)
def test_times_are_read_in_the_file_zone_unless_they_carry_an_offset(
    tmp_path: Path, text: str, zone: str, expected: datetime
) -> None:
    result = read(
        tmp_path, f"customer_id,timestamp,amount\nc1,{text},1\n", FileFormat(time_zone=zone)
    )
    assert result.errors == []
    (transaction,) = result.transactions
    assert transaction.at == expected
    assert transaction.at.tzinfo is UTC


@pytest.mark.parametrize(
    ("date_format", "text", "expected"),
    [
        ("%d/%m/%Y", "31/01/2024", at(2024, 1, 31, 8)),
        ("%d.%m.%Y %H:%M", "02.03.2024 10:15", at(2024, 3, 2, 18, 15)),
        ("%m/%d/%y %I:%M %p", "03/02/24 10:15 PM", at(2024, 3, 3, 6, 15)),
        # Summer time (PDT, UTC-7) where it applies.
        ("%d/%m/%Y %H:%M", "01/07/2024 12:00", at(2024, 7, 1, 19)),
        # An offset parsed with %z is honoured; the zone is only for naive times.
        ("%Y-%m-%d %H:%M %z", "2024-03-02 10:15 +0100", at(2024, 3, 2, 9, 15)),
    ],
)
def test_a_custom_date_format_reads_the_times(
    tmp_path: Path, date_format: str, text: str, expected: datetime
) -> None:
    result = read(
        tmp_path,
        f"customer_id\ttimestamp\tamount\nc1\t{text}\t1\n",
        FileFormat(delimiter="\t", date_format=date_format, time_zone="America/Los_Angeles"),
    )
    assert result.errors == []
    assert [t.at for t in result.transactions] == [expected]


def test_a_custom_date_format_refuses_iso_dates_that_do_not_match_it(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "customer_id,timestamp,amount\nc1,2024-01-31,1\n",
        FileFormat(date_format="%d/%m/%Y"),
    )
    assert reasons(result) == [(2, "unparseable_time")]
    assert "%d/%m/%Y" in result.errors[0].detail


@pytest.mark.parametrize(
    ("text", "minor_digits", "expected"),
    [
        ("12.5", 2, 1250),
        ("12.500", 2, 1250),
        ("12.", 2, 1200),
        (".5", 2, 50),
        ("0.01", 2, 1),
        ("+3", 2, 300),
        ("007.10", 2, 710),
        ("1500", 0, 1500),
        ("1500.000", 0, 1500),
        ("1.234", 3, 1234),
        ("10000000000", 2, MAX_AMOUNT_MINOR),
        ("1." + "0" * 500, 2, 100),
    ],
)
def test_amounts_convert_exactly_to_minor_units(
    tmp_path: Path, text: str, minor_digits: int, expected: int
) -> None:
    result = read(
        tmp_path,
        f"customer_id,timestamp,amount\nc1,2024-01-01,{text}\n",
        FileFormat(minor_digits=minor_digits, currency="JPY" if minor_digits == 0 else "USD"),
    )
    assert result.errors == []
    assert [t.amount_minor for t in result.transactions] == [expected]


# One bad row per reason, written after a header at line 1 (so it is line 2).
BAD_ROWS: list[tuple[str, str]] = [
    ('c1,"2024"-01-01,12.50', "malformed_row"),
    ("c1,2024-01-01", "too_few_fields"),
    (",2024-01-01,12.50", "empty_customer_id"),
    ("  ,2024-01-01,12.50", "empty_customer_id"),
    ("john doe,2024-01-01,12.50", "invalid_customer_id"),
    ("c\x071,2024-01-01,12.50", "invalid_customer_id"),
    ("c" * 129 + ",2024-01-01,12.50", "invalid_customer_id"),
    ("c1,,12.50", "unparseable_time"),
    ("c1,yesterday,12.50", "unparseable_time"),
    ("c1,2024-02-30,12.50", "unparseable_time"),
    ("c1,19971301,12.50", "unparseable_time"),
    ("c1,9999-12-31T12:00:00Z,12.50", "unparseable_time"),
    ("c1,2024-01-01,", "unparseable_amount"),
    ("c1,2024-01-01,twelve", "unparseable_amount"),
    ("c1,2024-01-01,$12.50", "unparseable_amount"),
    ('c1,2024-01-01,"1,000.00"', "unparseable_amount"),
    ("c1,2024-01-01,1e3", "unparseable_amount"),
    ("c1,2024-01-01,1_000", "unparseable_amount"),
    ("c1,2024-01-01,NaN", "unparseable_amount"),
    ("c1,2024-01-01,Infinity", "unparseable_amount"),
    ("c1,2024-01-01,\u0661\u0662", "unparseable_amount"),
    ("c1,2024-01-01,0", "not_a_purchase"),
    ("c1,2024-01-01,0.00", "not_a_purchase"),
    ("c1,2024-01-01,-0", "not_a_purchase"),
    ("c1,2024-01-01,-12.50", "not_a_purchase"),
    ("c1,2024-01-01,-0.001", "not_a_purchase"),
    ("c1,2024-01-01,12.505", "too_many_decimals"),
    ("c1,2024-01-01,0.001", "too_many_decimals"),
    ("c1,2024-01-01,1." + "0" * 80 + "1", "too_many_decimals"),
    ("c1,2024-01-01,10000000000.01", "amount_out_of_range"),
    ("c1,2024-01-01," + "9" * 200, "amount_out_of_range"),
]

# Rows that only go wrong with an order column (customer_id,timestamp,amount,order_id).
BAD_ORDER_ROWS: list[tuple[str, str]] = [
    ("c1,2024-01-01,12.50,", "empty_order_id"),
    ("c1,2024-01-01,12.50,order 1", "invalid_order_id"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
def test_a_bad_row_is_reported_with_its_reason_and_line(
    tmp_path: Path, row: str, reason: str
) -> None:
    result = read(tmp_path, f"customer_id,timestamp,amount\n{row}\nc2,2024-01-02,1.00\n")
    assert reasons(result) == [(2, reason)]
    assert result.errors[0].detail
    assert result.errors[0].text == (row if len(row) <= 200 else row[:197] + "...")
    # The row after it is read all the same.
    assert [(t.line, t.customer_id) for t in result.transactions] == [(3, "c2")]
    assert result.rows == 2


@pytest.mark.parametrize(("row", "reason"), BAD_ORDER_ROWS)
def test_a_bad_order_id_is_reported_with_its_reason_and_line(
    tmp_path: Path, row: str, reason: str
) -> None:
    result = read(tmp_path, f"customer_id,timestamp,amount,order_id\n{row}\n", ORDERS)
    assert reasons(result) == [(2, reason)]
    assert result.transactions == []


def test_every_line_reason_has_a_bad_row_above() -> None:
    tested = {r for _, r in BAD_ROWS + BAD_ORDER_ROWS} | {"order_customer_mismatch"}
    assert tested == set(LINE_REASONS)


def test_a_short_row_in_a_whitespace_file_is_too_few_fields(tmp_path: Path) -> None:
    result = read(tmp_path, "00001 19970101 1\n00002 19970101 1 5.00\n", WHITESPACE)
    assert reasons(result) == [(1, "too_few_fields")]
    assert result.errors[0].detail == "expected at least 4 fields, found 3"


def test_an_unbalanced_quote_is_reported_at_the_line_where_its_row_starts(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        'customer_id,timestamp,amount\nc1,2024-01-01,1\n"c2,2024-01-01,1\nc3,2024-01-01,1\n',
    )
    assert reasons(result) == [(3, "malformed_row")]
    assert [t.customer_id for t in result.transactions] == ["c1"]


def test_a_quoted_field_may_span_lines_and_the_next_row_keeps_its_line_number(
    tmp_path: Path,
) -> None:
    result = read(
        tmp_path,
        'customer_id,note,timestamp,amount\nc1,"two\nlines",2024-01-01,1\nc2,x,2024-01-02,2\n',
    )
    assert result.errors == []
    assert [(t.line, t.customer_id) for t in result.transactions] == [(2, "c1"), (4, "c2")]


def test_bad_rows_come_in_line_order_and_the_good_ones_are_kept(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "00001 19970101 1 11.77\n"
        "00002 19970102 1 -3.00\n"
        "00003 1997010x 1 4.00\n"
        "00004 19970103 1 5.00\n"
        "00005 19970104 1 5.001\n",
        WHITESPACE,
    )
    assert reasons(result) == [
        (2, "not_a_purchase"),
        (3, "unparseable_time"),
        (5, "too_many_decimals"),
    ]
    assert [t.line for t in result.transactions] == [1, 4]
    assert result.rows == 5


def test_error_text_is_the_row_cut_to_200_characters(tmp_path: Path) -> None:
    row = "c1,2024-01-01,-1," + "x" * 500
    (error,) = read(tmp_path, f"customer_id,timestamp,amount\n{row}\r\n").errors
    assert error == LineError(2, "not_a_purchase", error.detail, row[:197] + "...")
    assert len(error.text) == 200


# ---------------------------------------------------------------------------
# Orders


def test_rows_sharing_an_order_id_form_one_purchase(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "customer_id,timestamp,amount,order_id\n"
        "alice,2024-01-01T10:05:00Z,10.00,A-1\n"
        "bob,2024-01-01T09:00:00Z,1.00,B-1\n"
        "alice,2024-01-01T10:00:00Z,2.50,A-1\n"
        "alice,2024-01-01T10:10:00Z,0.25,A-1\n",
        ORDERS,
    )
    assert result.errors == []
    assert result.transactions == [
        Transaction(3, "bob", "B-1", at(2024, 1, 1, 9), 100, "USD"),
        # Summed, at its earliest row's time, named by its first line.
        Transaction(2, "alice", "A-1", at(2024, 1, 1, 10), 1275, "USD"),
    ]


def test_an_order_row_of_another_customer_is_refused_on_that_row(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "customer_id,timestamp,amount,order_id\n"
        "alice,2024-01-01,10.00,A-1\n"
        "mallory,2023-12-31,99.00,A-1\n"
        "alice,2024-01-02,1.00,A-1\n",
        ORDERS,
    )
    assert reasons(result) == [(3, "order_customer_mismatch")]
    assert "alice" in result.errors[0].detail and "line 2" in result.errors[0].detail
    assert result.transactions == [Transaction(2, "alice", "A-1", at(2024, 1, 1), 1100, "USD")]


def test_an_order_summing_past_the_contract_maximum_is_refused_on_the_row_that_overflows(
    tmp_path: Path,
) -> None:
    result = read(
        tmp_path,
        "customer_id,timestamp,amount,order_id\n"
        "alice,2024-01-01,9000000000,A-1\n"
        "alice,2024-01-01,1000000000,A-1\n"
        "alice,2024-01-01,0.01,A-1\n",
        ORDERS,
    )
    assert reasons(result) == [(4, "amount_out_of_range")]
    assert [t.amount_minor for t in result.transactions] == [MAX_AMOUNT_MINOR]


def test_without_an_order_column_each_row_is_an_order_named_by_its_time_and_rank(
    tmp_path: Path,
) -> None:
    result = read(
        tmp_path,
        "customer_id,timestamp,amount\n"
        "alice,2024-01-01,1\n"
        "bob,2024-01-01,1\n"
        "alice,2024-01-01,2\n"
        "alice,2024-01-01T00:00:00.5Z,3\n",
        FileFormat(time_zone="Asia/Jakarta"),
    )
    assert [(t.customer_id, t.order_id, t.amount_minor) for t in result.transactions] == [
        ("alice", "20231231T170000Z-1", 100),
        ("bob", "20231231T170000Z-1", 100),
        ("alice", "20231231T170000Z-2", 200),
        ("alice", "20240101T000000.500000Z-1", 300),
    ]


def test_appending_rows_or_splitting_a_file_keeps_every_derived_order_id(tmp_path: Path) -> None:
    january = "00001 19970101 1 11.77\n00002 19970105 1 3.00\n"
    february = "00002 19970201 1 5.00\n00001 19970203 1 7.00\n"
    whole = read_transactions(write(tmp_path, january + february, "all.txt"), WHITESPACE)
    parts = [
        read_transactions(write(tmp_path, text, name), WHITESPACE)
        for text, name in ((january, "jan.txt"), (february, "feb.txt"))
    ]
    ids = {(t.customer_id, t.order_id) for t in whole.transactions}
    assert ids == {(t.customer_id, t.order_id) for p in parts for t in p.transactions}
    assert len(ids) == 4


# ---------------------------------------------------------------------------
# Lines, encodings and whole-file errors


def test_blank_lines_are_ignored_and_line_numbers_stay_those_of_the_file(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "\n  \ncustomer_id,timestamp,amount\r\n\r\nc1,2024-01-01,1\r\n \t \r\nc2,2024-01-02,-1\n\n",
    )
    assert [t.line for t in result.transactions] == [5]
    assert reasons(result) == [(7, "not_a_purchase")]
    assert result.rows == 2


def test_a_utf8_bom_before_the_header_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfcustomer_id,timestamp,amount\r\nc1,2024-01-01,1.00\r\n")
    result = read_transactions(path, FileFormat())
    assert [(t.customer_id, t.amount_minor) for t in result.transactions] == [("c1", 100)]


def test_a_utf8_bom_does_not_become_part_of_the_first_customer_id(tmp_path: Path) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_bytes(b"\xef\xbb\xbf00001 19970101 1 11.77\n")
    assert [t.customer_id for t in read_transactions(path, WHITESPACE).transactions] == ["00001"]


def test_a_header_without_a_chosen_column_is_a_file_error_naming_it_and_the_header(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "customer,date,amount\nc1,2024-01-01,1\n")
    with pytest.raises(TransactionFileError) as caught:
        read_transactions(path, FileFormat(customer="customer", order="order_no"))
    message = str(caught.value)
    assert "'timestamp' (time)" in message and "'order_no' (order)" in message
    assert "'customer', 'date', 'amount'" in message
    assert "customer_id" not in message


@pytest.mark.parametrize(
    ("content", "fmt", "expected"),
    [
        (b"", FileFormat(), "is empty"),
        (b"\n\n", FileFormat(), "is empty"),
        (b"customer_id,timestamp,amount,amount\n", FileFormat(), "appears more than once"),
        (b"customer_id,timestamp,amount\n", FileFormat(order="4"), "'4' (order)"),
        (b'"customer_id,timestamp,amount\n', FileFormat(), "cannot read the header"),
        (b"customer_id,timestamp,amount\n", FileFormat(time="1"), "the same column"),
        (
            b"customer_id,timestamp,amount\nc1,2024-01-01,1\ncaf\xe9,2024-01-01,1\n",
            FileFormat(),
            ":3: not UTF-8",
        ),
        (b"\xff\xfec\x00", WHITESPACE, ":1: not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_read_as_a_whole_is_a_file_error(
    tmp_path: Path, content: bytes, fmt: FileFormat, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(TransactionFileError, match=re.escape(expected)):
        read_transactions(path, fmt)


def test_an_unreadable_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(TransactionFileError, match="cannot read"):
        read_transactions(tmp_path / "missing.csv", FileFormat())
    with pytest.raises(TransactionFileError, match="cannot read"):
        read_transactions(tmp_path, FileFormat())


def test_a_file_with_only_a_header_has_no_purchases(tmp_path: Path) -> None:
    result = read(tmp_path, "customer_id,timestamp,amount\n")
    assert (result.transactions, result.errors, result.rows) == ([], [], 0)


def test_an_empty_file_without_a_header_has_no_purchases(tmp_path: Path) -> None:
    assert read(tmp_path, "", WHITESPACE).transactions == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"delimiter": ""}, "delimiter"),
        ({"delimiter": ";;"}, "delimiter"),
        ({"delimiter": '"'}, "delimiter"),
        ({"header": False}, "1-based position"),
        ({"header": False, "customer": "0", "time": "2", "amount": "3"}, "1-based position"),
        ({"customer": "amount"}, "overlap"),
        ({"order": "customer_id"}, "overlap"),
        ({"time": " "}, "empty"),
        ({"time_zone": "Mars/Olympus"}, "time zone"),
        ({"time_zone": ""}, "time zone"),
        ({"currency": "usd"}, "ISO 4217"),
        ({"minor_digits": -1}, "minor_digits"),
        ({"minor_digits": 5}, "minor_digits"),
    ],
)
def test_a_file_format_with_a_bad_setting_is_refused(
    options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        FileFormat(**options)


# ---------------------------------------------------------------------------
# Events


def test_each_purchase_becomes_a_checkout_then_its_payment_for_the_full_amount(
    tmp_path: Path,
) -> None:
    result = read(tmp_path, "00042 19970101 1 11.77\n", WHITESPACE)
    checkout, payment = transaction_events(result.transactions, source="s1", shop_id="cdnow")
    assert (checkout.role, payment.role) == ("checkouts", "payments")
    assert checkout.key == payment.key == b"00042"
    assert checkout.occurred_at == payment.occurred_at == at(1997, 1, 1)
    assert checkout.label == payment.label == "replay"
    assert orjson.loads(checkout.value) == {
        "type": "checkout_confirmed",
        "event_id": orjson.loads(checkout.value)["event_id"],
        "customer_id": "00042",
        "shop_id": "cdnow",
        "occurred_at": "1997-01-01T00:00:00+00:00",
        "order_id": "19970101T000000Z-1",
        "total": {"amount_minor": 1177, "currency": "USD"},
        "payment_method": "card",
        "payment_due_at": "1997-01-02T00:00:00+00:00",
    }
    assert orjson.loads(payment.value) == {
        "type": "payment_attempted",
        "event_id": orjson.loads(payment.value)["event_id"],
        "customer_id": "00042",
        "shop_id": "cdnow",
        "occurred_at": "1997-01-01T00:00:00+00:00",
        "order_id": "19970101T000000Z-1",
        "status": "succeeded",
        "amount": {"amount_minor": 1177, "currency": "USD"},
        "method": "card",
    }


def test_hitrun_ingest_accepts_every_event_on_the_topic_of_its_role(tmp_path: Path) -> None:
    result = read(
        tmp_path,
        "customer_id;timestamp;amount;order_id\n"
        "alice;2024-01-01T10:00:00.25+07:00;10;A-1\n"
        "bob;2024-01-02;1234.5678;B-1\n"
        "alice;2024-01-03T23:59:59Z;0.0001;A-2\n",
        FileFormat(delimiter=";", order="order_id", currency="CLF", minor_digits=4),
    )
    messages = list(transaction_events(result.transactions, source=result.digest))
    assert {m.role for m in messages} == set(ROLE_TYPES) <= set(ROLES)
    records = ingest(messages)
    assert [type(r) for r in records] == [CheckoutConfirmed, PaymentAttempted] * 3
    checkouts = [r for r in records if isinstance(r, CheckoutConfirmed)]
    payments = [r for r in records if isinstance(r, PaymentAttempted)]
    assert [(c.order_id, c.total.amount_minor, c.total.currency) for c in checkouts] == [
        ("A-1", 100000, "CLF"),
        ("B-1", 12345678, "CLF"),
        ("A-2", 1, "CLF"),
    ]
    for checkout, payment in zip(checkouts, payments, strict=True):
        assert payment.order_id == checkout.order_id
        assert payment.status == "succeeded"
        assert payment.amount == checkout.total
        assert payment.occurred_at == checkout.occurred_at
        assert checkout.payment_due_at == checkout.occurred_at + timedelta(days=1)


def test_events_come_in_time_order_with_each_checkout_before_its_payment() -> None:
    shuffled = [
        tx(3, "c", at(2024, 1, 2), 300),
        tx(1, "a", at(2024, 1, 3), 100),
        tx(2, "b", at(2024, 1, 2), 200),
        tx(4, "d", at(2024, 1, 1), 400),
    ]
    messages = list(transaction_events(shuffled, source="s"))
    orders = [(m.role, orjson.loads(m.value)["order_id"]) for m in messages]
    assert orders == [
        (role, order)
        for order in ("ord-4", "ord-2", "ord-3", "ord-1")
        for role in ("checkouts", "payments")
    ]
    times = [m.occurred_at for m in messages]
    assert times == sorted(times)


def test_event_ids_are_unique_and_change_with_the_source_and_the_shop() -> None:
    purchases = [tx(n, f"c{n % 3}", at(2024, 1, 1 + n), 100 * n) for n in range(1, 20)]

    def ids(**kwargs: str) -> list[str]:
        return [orjson.loads(m.value)["event_id"] for m in transaction_events(purchases, **kwargs)]

    base = ids(source="file-a")
    assert len(set(base)) == len(base) == 38
    assert ids(source="file-a") == base
    assert set(ids(source="file-b")).isdisjoint(base)
    assert set(ids(source="file-a", shop_id="shop-2")).isdisjoint(base)


def test_the_same_file_read_twice_gives_byte_identical_messages(tmp_path: Path) -> None:
    text = "00001 19970101 1 11.77\n00002 19970112 1 12.00\n00002 19970112 5 77.00\n"
    first = read_transactions(write(tmp_path, text, "a.txt"), WHITESPACE)
    again = read_transactions(write(tmp_path, text, "b.txt"), WHITESPACE)
    other = read_transactions(write(tmp_path, text + "00003 19970101 1 1\n", "c.txt"), WHITESPACE)
    assert first.digest == again.digest != other.digest

    def messages(result: ReadResult) -> list[tuple[str, bytes | None, bytes]]:
        return [
            (m.role, m.key, m.value)
            for m in transaction_events(result.transactions, source=result.digest)
        ]

    assert messages(first) == messages(again)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"shop_id": ""}, "shop_id"),
        ({"shop_id": "my shop"}, "shop_id"),
        ({"payment_method": "cash"}, "payment_method"),
    ],
)
def test_transaction_events_refuses_a_bad_shop_or_method_before_any_message(
    options: dict[str, str], expected: str
) -> None:
    with pytest.raises(ValueError, match=expected):
        transaction_events([], source="s", **options)


@pytest.mark.parametrize(
    "method",
    [
        "card",
        "e_wallet",
        "bank_transfer",
        "virtual_account",
        "convenience_store",
        "cash_on_delivery",
    ],
)
def test_every_payment_method_of_the_contract_is_accepted(method: str) -> None:
    messages = transaction_events(
        [tx(1, "c", at(2024, 1, 1), 1)], source="s", payment_method=method
    )
    assert [r.type for r in ingest(messages)] == ["checkout_confirmed", "payment_attempted"]


# ---------------------------------------------------------------------------
# Properties


def read_text(text: str, fmt: FileFormat) -> ReadResult:
    with tempfile.TemporaryDirectory() as directory:
        return read_transactions(write(Path(directory), text), fmt)


def with_trailing_zeros(text: str, zeros: int) -> str:
    if not zeros:
        return text
    return text + "0" * zeros if "." in text else f"{text}.{'0' * zeros}"


@settings(max_examples=200, deadline=None)
@given(minor_digits=st.integers(0, 4), data=st.data())
def test_amounts_round_trip_exactly_from_any_decimal(
    minor_digits: int, data: st.DataObject
) -> None:
    step = Decimal(1).scaleb(-minor_digits)
    amounts = data.draw(
        st.lists(
            st.decimals(
                min_value=step,
                max_value=Decimal(MAX_AMOUNT_MINOR) * step,
                places=minor_digits,
                allow_nan=False,
                allow_infinity=False,
            ),
            min_size=1,
            max_size=20,
        )
    )
    # Trailing zeros change nothing, even past the minor unit.
    padding = data.draw(st.integers(0, 3))
    rows = "".join(
        f"c{n},2024-01-01,{with_trailing_zeros(f'{amount:f}', padding)}\n"
        for n, amount in enumerate(amounts)
    )
    result = read_text(
        f"customer_id,timestamp,amount\n{rows}", FileFormat(minor_digits=minor_digits)
    )
    assert result.errors == []
    by_line = {t.line: t.amount_minor for t in result.transactions}
    assert [by_line[n + 2] for n in range(len(amounts))] == [
        int(a.scaleb(minor_digits)) for a in amounts
    ]
    assert all(Decimal(by_line[n + 2]).scaleb(-minor_digits) == a for n, a in enumerate(amounts))


@settings(max_examples=200, deadline=None)
@given(
    minor_digits=st.integers(0, 4),
    whole=st.integers(0, 10**6),
    extra=st.integers(1, 10**6).filter(lambda n: n % 10 != 0),
)
def test_a_non_zero_digit_past_the_minor_unit_is_refused_never_rounded(
    minor_digits: int, whole: int, extra: int
) -> None:
    amount = f"{whole}.{'0' * minor_digits}{extra}"
    result = read_text(
        f"customer_id,timestamp,amount\nc1,2024-01-01,{amount}\n",
        FileFormat(minor_digits=minor_digits),
    )
    assert reasons(result) == [(2, "too_many_decimals")]
    assert result.transactions == []


identifiers = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(
    lambda s: s.isprintable() and not any(c.isspace() for c in s) and "," not in s and '"' not in s
)

purchases = st.lists(
    st.tuples(
        identifiers,
        st.datetimes(
            min_value=datetime(1970, 1, 2),
            max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from(
                [UTC, timezone(timedelta(hours=7)), timezone(-timedelta(hours=5, minutes=30))]
            ),
        ),
        st.integers(1, MAX_AMOUNT_MINOR),
        st.booleans(),
    ),
    max_size=30,
)


def as_file(rows: list[tuple[str, datetime, int, bool]]) -> str:
    lines = ["customer_id,timestamp,amount"]
    for customer, moment, minor, naive in rows:
        stamp = moment.replace(tzinfo=None).isoformat() if naive else moment.isoformat()
        lines.append(f"{customer},{stamp},{Decimal(minor).scaleb(-2):f}")
    return "\n".join(lines) + "\n"


@settings(max_examples=100, deadline=None)
@given(rows=purchases)
def test_any_well_formed_file_gives_events_hitrun_accepts_and_the_same_bytes_every_time(
    rows: list[tuple[str, datetime, int, bool]],
) -> None:
    text = as_file(rows)
    fmt = FileFormat(time_zone="Asia/Jakarta")
    first, again = read_text(text, fmt), read_text(text, fmt)
    assert first.errors == []
    assert len(first.transactions) == len(rows)
    messages = list(transaction_events(first.transactions, source=first.digest))
    assert [(m.role, m.key, m.value) for m in messages] == [
        (m.role, m.key, m.value)
        for m in transaction_events(again.transactions, source=again.digest)
    ]
    records = ingest(messages)
    assert len({r.event_id for r in records}) == len(records) == 2 * len(rows)
    # Each order is placed once, and its payment follows its checkout at once.
    assert [r.type for r in records] == ["checkout_confirmed", "payment_attempted"] * len(rows)
    assert len(
        {(r.customer_id, r.order_id) for r in records if isinstance(r, CheckoutConfirmed)}
    ) == len(rows)
    assert [r.occurred_at for r in records] == sorted(r.occurred_at for r in records)
    expected = sorted(
        (
            (moment.replace(tzinfo=None) - timedelta(hours=7)).replace(tzinfo=UTC)
            if naive
            else moment.astimezone(UTC),
            customer,
            minor,
        )
        for customer, moment, minor, naive in rows
    )
    got = sorted(
        (r.occurred_at, r.customer_id, r.total.amount_minor)
        for r in records
        if isinstance(r, CheckoutConfirmed)
    )
    assert got == expected


@given(st.text(max_size=140))
def test_an_identifier_is_printable_text_without_any_whitespace(value: str) -> None:
    # The contract's rule, written out character by character.
    expected = 0 < len(value) <= 128 and value.isprintable() and not any(c.isspace() for c in value)
    assert _is_identifier(value) == expected


@given(st.datetimes(timezones=st.just(UTC)))
def test_the_compact_time_in_an_order_id_is_the_strftime_one(at: datetime) -> None:
    fraction = f".{at.microsecond:06d}" if at.microsecond else ""
    assert _compact(at) == f"{at:%Y%m%dT%H%M%S}{fraction}Z"


def test_a_repeated_time_is_read_alike_on_every_row_refused_or_not(tmp_path: Path) -> None:
    # Each distinct time text is parsed once (a cache): a refused one must be
    # refused again on every row that repeats it, and a good one give the same
    # instant, in whichever time zone the file is read.
    rows = "customer_id,timestamp,amount\n" + "c1,2024-13-01,1\nc2,2024-03-01,1\n" * 3
    result = read(tmp_path, rows)
    assert reasons(result) == [
        (2, "unparseable_time"),
        (4, "unparseable_time"),
        (6, "unparseable_time"),
    ]
    assert [t.at for t in result.transactions] == [datetime(2024, 3, 1, tzinfo=UTC)] * 3
    zoned = read(tmp_path, rows, FileFormat(time_zone="Asia/Jakarta"))
    assert [t.at for t in zoned.transactions] == [datetime(2024, 2, 29, 17, tzinfo=UTC)] * 3
