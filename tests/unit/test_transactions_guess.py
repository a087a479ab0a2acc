"""The replay guesses a file's layout from its header and first rows, never over a given value."""

from __future__ import annotations

from pathlib import Path

from hitrun.streams.transactions import FileFormat, guess_format, read_transactions

NOTHING_GIVEN: frozenset[str] = frozenset()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


def test_a_retail_export_gets_its_delimiter_columns_and_day_first_dates_guessed(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "InvoiceNo;CustomerID;InvoiceDate;Sales\n"
        "536365;17850;25/12/2010 08:26;15.30\n"
        "536365;17850;25/12/2010 08:26;20.34\n"
        "536366;13047;01/12/2010 09:00;22.00\n",
    )
    fmt, notes = guess_format(path, FileFormat(), NOTHING_GIVEN)
    assert (fmt.delimiter, fmt.customer, fmt.time, fmt.amount, fmt.order) == (
        ";",
        "CustomerID",
        "InvoiceDate",
        "Sales",
        "InvoiceNo",
    )
    assert fmt.date_format == "%d/%m/%Y %H:%M"  # 25/12 cannot be month first
    assert len(notes) == 6 and all("guessed" in note for note in notes)
    result = read_transactions(path, fmt)
    assert result.errors == []
    # Dec 1 comes first; the two rows of invoice 536365 are one order.
    assert [t.amount_minor for t in result.transactions] == [2200, 3564]


def test_an_ambiguous_date_format_is_named_with_its_rival(tmp_path: Path) -> None:
    path = write(tmp_path, "customer_id,date,amount\nc1,01/02/2024,5\nc2,03/04/2024,5\n")
    fmt, notes = guess_format(path, FileFormat(), NOTHING_GIVEN)
    assert fmt.time == "date" and fmt.date_format == "%d/%m/%Y"
    assert any("'%m/%d/%Y' fits too" in note for note in notes)


def test_a_file_in_the_default_layout_needs_no_guess(tmp_path: Path) -> None:
    path = write(tmp_path, "customer_id,timestamp,amount\nc1,2024-01-01,5\nc2,20240102,5\n")
    assert guess_format(path, FileFormat(), NOTHING_GIVEN) == (FileFormat(), [])


def test_a_given_value_is_never_replaced(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id;when;total;customer\nu1;01/02/2024;5;x\n")
    given_format = FileFormat(delimiter=";", customer="user_id", date_format="%m/%d/%Y")
    fmt, _ = guess_format(path, given_format, frozenset({"delimiter", "customer", "date_format"}))
    assert (fmt.customer, fmt.date_format, fmt.amount) == ("user_id", "%m/%d/%Y", "total")


def test_whitespace_separated_files_and_files_without_a_header_are_handled(
    tmp_path: Path,
) -> None:
    spaced = write(tmp_path, "customer_id timestamp amount\nc1 2024-01-01 5\n")
    fmt, notes = guess_format(spaced, FileFormat(), NOTHING_GIVEN)
    assert fmt.delimiter is None and notes == ["delimiter: whitespace (guessed from the header)"]
    headless = FileFormat(header=False, customer="1", time="2", amount="3")
    assert guess_format(spaced, headless, NOTHING_GIVEN) == (headless, [])
