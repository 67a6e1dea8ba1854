"""The only module that reads raw data: CSV, Parquet, JSON lines or Excel files in a folder, or
a DuckDB database.

:func:`load` reads ``transactions`` (required), ``events`` and ``customers`` (optional), renames
columns by the mapping, validates them against the contract and leaves them, typed, as DuckDB
tables ``transactions(customer_id, ts, amount, order_id, channel, status)``,
``events(customer_id, ts, event_type, value, channel)`` and
``customers(customer_id, signup_date, attr_*)`` in an in-memory connection. Timestamps are
naive local times of ``data.timezone`` (UTC by default: a naive input is taken as that
zone's; an input with an offset is converted to it).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from clm import interrupts
from clm.errors import DataError
from clm.settings import DataSettings
from features.contract import (
    CONTRACTS,
    MISSING_MARKERS,
    RawTable,
    TableContract,
    ambiguous_points,
    check_columns,
    clean_value_text,
    column_label,
    csv_delimiter,
    distinct_hashes,
    quote_name,
    ragged_record,
    raw_copies,
    row_places,
    typed_select,
    validate,
)
from features.sql import one_row, quote_text, text_list

__all__ = ["Dataset", "attribute_name", "check_out_is_no_input", "find_table_files", "load"]

JSON_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")  # JSON lines: a record a line
SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", *JSON_SUFFIXES, ".xlsx")
EMPTY_TABLES = {  # a loaded table's columns, _row (its place in the source) first
    "events": "_row BIGINT, customer_id VARCHAR, ts TIMESTAMP, event_type VARCHAR, "
    "value DOUBLE, channel VARCHAR",
    "customers": "_row BIGINT, customer_id VARCHAR, signup_date TIMESTAMP",
}


@dataclass
class Dataset:
    """Validated, typed tables in a DuckDB connection, and what was found."""

    con: duckdb.DuckDBPyConnection
    sources: dict[str, str]  # table -> label of the file / table it came from
    attributes: dict[str, str] = field(default_factory=dict)  # attr column -> 'numeric'|'category'
    row_counts: dict[str, int] = field(default_factory=dict)
    csv_paths: dict[str, Path] = field(default_factory=dict)  # table -> its CSV file, if one
    mappings: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> its mapping
    unread: dict[str, list[str]] = field(default_factory=dict)  # table -> columns not read
    timezone: str = "UTC"  # the business's zone: ts columns hold its local times
    _channels: list[str] | None = field(default=None, init=False, repr=False)
    _event_types: dict[str, tuple[int, int]] | None = field(default=None, init=False, repr=False)
    said: set[str] = field(default_factory=set, init=False, repr=False)  # one-time warnings
    _range: tuple[datetime | None, datetime | None] | None = field(
        default=None, init=False, repr=False
    )

    def has(self, table: str) -> bool:
        return table in self.sources

    def column_label(self, table: str, column: str) -> str:
        """How messages name a contract column: ``'score' (mapped to value)`` if renamed."""
        return column_label(self.mappings.get(table, {}).get(column, column), column)

    def row_places(self, table: str, rows: list[int]) -> dict[int, str]:
        """How messages name these rows (1-based) of a table: ``row 7 (line 9)`` in a CSV."""
        return row_places(self.csv_paths.get(table), rows)

    def channels(self) -> list[str]:
        """Every channel named by a transaction or an event (read once)."""
        if self._channels is None:
            rows = self.con.execute(
                "SELECT DISTINCT channel FROM (SELECT channel FROM transactions UNION ALL "
                "SELECT channel FROM events) AS t WHERE channel IS NOT NULL ORDER BY 1"
            ).fetchall()
            self._channels = [r[0] for r in rows]
        return self._channels

    def event_types(self) -> dict[str, tuple[int, int]]:
        """Every event type: its events and how many carry a value (read once)."""
        if self._event_types is None:
            rows = self.con.execute(
                "SELECT event_type, count(*), count(value) FROM events GROUP BY 1 ORDER BY 1"
            ).fetchall()
            self._event_types = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        return self._event_types

    def date_range(self) -> tuple[datetime | None, datetime | None]:
        """The first and last timestamp over transactions and events (read once)."""
        if self._range is None:
            first, last = one_row(
                self.con,
                "SELECT min(ts), max(ts) FROM (SELECT ts FROM transactions UNION ALL "
                "SELECT ts FROM events) AS t",
            )
            self._range = (first, last)
        return self._range


def attribute_name(column: str) -> str:
    """A customer attribute's feature name: ``attr_`` + the column in snake case."""
    return "attr_" + (re.sub(r"[^0-9a-zA-Z]+", "_", column).strip("_").lower() or "unnamed")


def _table_suffix(name: str) -> str | None:
    """The table suffix ``name`` ends with (``.csv.gz`` before ``.gz``), any case."""
    lowered = name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if lowered.endswith(s)), None)


def check_out_is_no_input(out: Path, location: Path, *others: tuple[str, Path]) -> None:
    """Refuse an output that would replace an input: a table file of the data at
    ``location`` (``--out data/transactions.parquet``) or another input (``("--customers",
    path)``). A run writes its output at the end, so the input would be gone."""
    target = out.resolve()
    for option, path in others:
        if path.resolve() == target:
            raise DataError(f"--out {out}: that is the {option} file; write the output elsewhere")
    folder = location.resolve()
    suffix = _table_suffix(out.name)
    if target.parent == folder and suffix and out.name[: -len(suffix)].lower() in CONTRACTS:
        raise DataError(
            f"--out {out}: a table file of --data {location} (it would be replaced, and read "
            "as data next time); write the output elsewhere"
        )


# Files a user may have meant as tables, though they are not read: other spreadsheet forms.
OTHER_FORMATS = (".xls", ".xlsm", ".json", ".tsv", ".txt", ".gz", ".zip")


def find_table_files(folder: Path) -> dict[str, Path]:
    """The file of each contract table in ``folder`` (``transactions.csv``, ``Events.parquet``:
    names match in any case). A file that looks like a table but is not read (another name,
    or another format) gets a warning that names it."""
    found: dict[str, Path] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for table in CONTRACTS:
        present = [
            p for p in files if (s := _table_suffix(p.name)) and p.name[: -len(s)].lower() == table
        ]
        if len(present) > 1:
            names = ", ".join(p.name for p in present)
            raise DataError(f"{folder}: more than one file for table {table} ({names}); keep one")
        if present:
            found[table] = present[0]
    used = set(found.values())
    tables = ", ".join(CONTRACTS)
    for path in files:
        if path in used:
            continue
        if _table_suffix(path.name):
            warnings.warn(
                f"{path}: not read (table files are named {tables}, with {', '.join(SUFFIXES)})",
                UserWarning,
                stacklevel=2,
            )
        elif (
            path.name.lower().endswith(OTHER_FORMATS)
            and path.stem.split(".")[0].lower() in CONTRACTS
        ):
            warnings.warn(
                f"{path}: not read ({path.suffix} is not a table format; save it as "
                f"{path.stem.split('.')[0]}.csv or .parquet)",
                UserWarning,
                stacklevel=2,
            )
    return found


def _csv_header(path: Path, delimiter: str = ",") -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle, delimiter=delimiter), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: not UTF-8 text ({exc}); save the file as UTF-8") from exc
    if not header:
        raise DataError(f"{path.name}: the file is empty (expected a header row)")
    _check_header(path, header, "line 1", "fields")
    return header


def _check_header(path: Path, header: list[str], where: str, places: str) -> None:
    """Each column name once: SQL names ignore case ('customer_id' and 'Customer_ID' are one
    column). Empty names (the trailing commas of a spreadsheet export) name nothing; '_row'
    is the row numbers' own."""
    seen: dict[str, tuple[str, int]] = {}
    for position, name in enumerate(header, start=1):
        if not name.strip():
            continue
        if name.strip().lower() == "_row":
            raise DataError(
                f"{path.name}: {where}: column '_row': a name clm keeps for row numbers"
            )
        if (first := seen.get(name.strip().lower())) is not None:
            what = (
                f"column {name!r} appears twice"
                if first[0] == name
                else f"columns {first[0]!r} and {name!r} name one column (names ignore case "
                "and surrounding spaces)"
            )
            raise DataError(
                f"{path.name}: {where}: {what}: {places} {first[1]} and {position} of the "
                "header (expected each column name once)"
            )
        seen[name.strip().lower()] = (name, position)


ZEROS = re.compile(r"0+")  # a number format that pads with leading zeros (000123)


def _cell_text(value: object, number_format: str | None = None) -> str:
    """A worksheet cell's value as text: a whole number without '.0', and with the leading
    zeros its number format shows (a code formatted 000000), dates and times in ISO form,
    TRUE/FALSE as true/false, empty as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, int):
        text = str(value)
        if number_format and ZEROS.fullmatch(number_format) and value >= 0:
            return text.zfill(len(number_format))
        return text
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if hasattr(value, "isoformat"):  # a date or a time
        return str(value.isoformat())
    return str(value)


def _register_excel(con: duckdb.DuckDBPyConnection, path: Path, view: str) -> None:
    con.register(f"{view}_arrow", excel_table(path))
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {view}_arrow")


def _column_letter(index: int) -> str:
    """Excel's name of a 1-based column: 1 A, 27 AA."""
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def excel_table(path: Path) -> pa.Table:
    """An Excel workbook's first sheet (as a CRM or a spreadsheet exports a table): row 1
    the header, each cell's value as text (:func:`_cell_text`), and rows numbered as the
    sheet numbers them (the first record is row 2, as Excel shows it). A cell holding an
    error (#REF!, #DIV/0!) is refused by its place; other sheets with anything in them are
    named in a warning."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # a zip that is no workbook, a password, a broken file
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path.name}: not a readable Excel workbook ({message})") from exc
    try:
        header, cells, numbers, title, others = _read_sheet(path, book)
    except DataError:
        raise
    except Exception as exc:  # a damaged sheet shows when its cells are read
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path.name}: not a readable Excel workbook ({message})") from exc
    finally:
        book.close()
    if others:
        warnings.warn(
            f"{path}: read its first sheet {title!r}; the sheets "
            f"{', '.join(map(repr, others))} are not read (one table a file)",
            UserWarning,
            stacklevel=5,
        )
    arrays = {
        name: pa.array(column, pa.string()) for name, column in zip(header, cells, strict=True)
    }
    return pa.table(arrays).append_column("_row", pa.array(numbers, pa.int64()))


def _read_sheet(
    path: Path, book: Any
) -> tuple[list[str], list[list[str]], list[int], str, list[str]]:
    """The first sheet's header, its columns' texts, each row's number, its title and the
    titles of the other sheets that hold anything."""
    sheet = book.worksheets[0]
    where = f"{path.name}: sheet {sheet.title!r}"
    # A stored size can be wrong (some tools write one row or 16,384 columns): read it all.
    sheet.reset_dimensions()
    rows = sheet.iter_rows()
    header = [_cell_text(c.value).strip() for c in next(rows, ())]
    while header and not header[-1]:
        header.pop()
    if not any(header):
        raise DataError(f"{where} is empty (expected a header row in row 1)")
    _check_header(path, header, f"sheet {sheet.title!r} row 1", "columns")
    width = len(header)
    cells: list[list[str]] = [[] for _ in header]
    numbers: list[int] = []  # each row's number in the sheet
    for number, row in enumerate(rows, start=2):
        texts = []
        for position, cell in enumerate(row, start=1):
            if getattr(cell, "data_type", None) == "e":
                raise DataError(
                    f"{where} cell {_column_letter(position)}{number}: the error "
                    f"{cell.value} (expected a value; fix the formula or clear the cell)"
                )
            texts.append(_cell_text(cell.value, getattr(cell, "number_format", None)))
        if not any(texts):  # a blank row (as a blank line in a CSV file) is no row
            continue
        if any(texts[width:]):
            raise DataError(
                f"{where} row {number}: a value beyond the {width} named columns (expected a "
                "header for each column)"
            )
        texts += [""] * (width - len(texts))
        for column, text in zip(cells, texts, strict=False):
            column.append(text)
        numbers.append(number)
    for position, name in enumerate(header, start=1):
        if not name and any(cells[position - 1]):
            raise DataError(
                f"{where} column {_column_letter(position)}: values under an empty header "
                "(expected a name in row 1)"
            )
    named = [i for i, name in enumerate(header) if name]  # empty columns without a name: none
    others = [s.title for s in book.worksheets[1:] if _holds_anything(s)]
    return [header[i] for i in named], [cells[i] for i in named], numbers, sheet.title, others


def _holds_anything(sheet: Any) -> bool:
    sheet.reset_dimensions()
    return any(v is not None for row in sheet.iter_rows(values_only=True) for v in row)


def _register_csv(con: duckdb.DuckDBPyConnection, path: Path, view: str) -> None:
    delimiter = csv_delimiter(path)
    header = _csv_header(path, delimiter)
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding="utf8"),
            # A quoted value may hold a line break (csv_record_lines counts lines the same way).
            parse_options=pacsv.ParseOptions(newlines_in_values=True, delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        where = f"{ragged_record(path, delimiter)}; " if "Expected" in str(exc) else ""
        raise DataError(f"{path.name}: not a readable CSV file ({where}{exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: not a readable CSV file ({exc})") from exc
    # A header name with surrounding spaces (' customer_id ') is the name, as values are.
    table = table.rename_columns([n.strip() or n for n in table.column_names])
    table = table.append_column("_row", pa.array(range(1, table.num_rows + 1), pa.int64()))
    con.register(f"{view}_arrow", table)
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {view}_arrow")


def _register_json_lines(con: duckdb.DuckDBPyConnection, path: Path, view: str) -> None:
    """A JSON lines file (an object a line, as Segment, Amplitude or an app's log writes
    events): every key any record has is a column, its values read as text as a CSV file's
    are (a number as written, a nested object as its JSON), and ``_row`` the record's number
    (blank lines are no records)."""
    literal = str(path).replace("'", "''")
    records = f"read_ndjson_objects('{literal}') WITH ORDINALITY AS r(json, n)"
    try:
        # One pass: each set of keys the records have (a few), where it first appears.
        shapes = con.execute(
            f"SELECT json_type(json) = 'OBJECT' AS object, json_keys(json) AS keys, min(n) "
            f"FROM {records} GROUP BY ALL ORDER BY 3"
        ).fetchall()
    except duckdb.Error as exc:
        message = _bad_json_line(path) or " ".join(str(exc).split())
        raise DataError(f"{path.name}: not a readable JSON lines file ({message})") from exc
    bad = [first for is_object, _, first in shapes if not is_object]
    if bad:
        raise DataError(
            f"{path.name}: row {min(bad)}: not a JSON object (expected one object a line, such "
            'as {"customer_id": "C1", "timestamp": "2024-03-01", "amount": 19.99})'
        )
    # A key one object repeats ({"amount": 5, "amount": 7}: which is meant?). The shapes are
    # in order of their first record, so the first such shape names the first such record.
    for is_object, keys, first in shapes:
        if is_object and len(keys) != len(set(keys)):
            twice = next(k for k in keys if keys.count(k) > 1)
            raise DataError(
                f"{path.name}: row {first}: key {twice!r} twice (expected each key once)"
            )
    names = list(dict.fromkeys(str(k) for _, keys, _ in shapes for k in keys or ()))
    if not names:
        raise DataError(f"{path.name}: no records (expected one JSON object a line)")
    for name in names:
        if not name.strip() or name.strip().lower() == "_row":
            raise DataError(
                f"{path.name}: key {name!r}: "
                + ("an empty name" if not name.strip() else "a name clm keeps for row numbers")
                + " (expected a column name)"
            )
    seen: dict[str, str] = {}
    for name in names:
        if (first := seen.get(name.strip().lower())) is not None:
            raise DataError(
                f"{path.name}: keys {first!r} and {name!r} name one column (names ignore case "
                "and surrounding spaces; expected each key once)"
            )
        seen[name.strip().lower()] = name
    columns = "{" + ", ".join(f"{quote_text(n)}: 'VARCHAR'" for n in names) + "}"
    number = "_record"  # the record number's column: a name no key has
    while number.lower() in seen:
        number = f"_{number}"
    con.execute(
        f"CREATE OR REPLACE VIEW {view} AS SELECT * EXCLUDE ({number}), {number} AS _row "
        f"FROM read_json('{literal}', format = 'newline_delimited', columns = {columns}) "
        f"WITH ORDINALITY AS r({', '.join(quote_name(n) for n in names)}, {number})"
    )


def _bad_json_line(path: Path) -> str | None:
    """The first line of a JSON lines file that is not JSON, and why (error path only: a
    Python pass; DuckDB's message counts lines otherwise)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as error:
                        return f"line {number}: not JSON: {error.msg} at character {error.colno}"
    except (OSError, UnicodeDecodeError) as error:
        return str(error)
    return None


def _register_parquet(con: duckdb.DuckDBPyConnection, path: Path, view: str) -> None:
    literal = str(path).replace("'", "''")
    try:
        con.execute(
            f"CREATE OR REPLACE VIEW {view} AS SELECT * EXCLUDE (file_row_number), "
            f"file_row_number + 1 AS _row FROM read_parquet('{literal}', file_row_number=true)"
        )
    except duckdb.Error as exc:
        raise DataError(f"{path.name}: not a readable Parquet file ({exc})") from exc


def _column_types(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    return {name: str(kind) for name, kind, *_ in con.execute(f"DESCRIBE {view}").fetchall()}


def _mapping_for(
    table: str, columns: dict[str, dict[str, str]], types: dict[str, str]
) -> dict[str, str]:
    """This table's mapping: its own entries, and the '*' entries for columns its contract
    has, unless the file lacks the mapped column but has the contract's name itself."""
    contract = CONTRACTS[table]
    own = columns.get(table, {})
    for target in own:
        if target not in contract.column_names:
            raise DataError(
                f"column mapping for {table}: '{target}' is not a contract column "
                f"(expected one of {', '.join(contract.column_names)})"
            )
    shared = {
        target: source
        for target, source in columns.get("*", {}).items()
        if target in contract.column_names and (source in types or target not in types)
    }
    mapping = {**shared, **own}
    # A column written in another case (Customer_ID, a mapping to 'email' for 'Email') is
    # the one meant when no other spells it so (headers that differ in case only are
    # refused when read).
    folded: dict[str, list[str]] = {}
    for column in types:
        folded.setdefault(column.casefold(), []).append(column)
    for target in contract.column_names:
        source = mapping.get(target, target)
        spelled = folded.get(source.casefold(), [])
        if source not in types and len(spelled) == 1:
            mapping[target] = spelled[0]
    targets: dict[str, list[str]] = {}
    for target, source in mapping.items():
        targets.setdefault(source, []).append(target)
    for source, named in targets.items():
        if len(named) > 1:
            raise DataError(
                f"column mapping for {table}: column '{source}' is mapped to "
                f"{' and '.join(sorted(named))}; a column maps to one contract column"
            )
    return mapping


def _check_shared_mapping(columns: dict[str, dict[str, str]]) -> None:
    """A mapping without a table names a column of some table's contract."""
    every = {name for contract in CONTRACTS.values() for name in contract.column_names}
    for target, source in columns.get("*", {}).items():
        if target not in every:
            raise DataError(
                f"column mapping {target}={source}: '{target}' is not a contract column of any "
                f"table (expected one of {', '.join(sorted(every))})"
            )


# Attribute names that suggest a value that changes over time (a lifetime total, a last
# order's date, a status): read as they are now at every past cutoff, they leak the outcome.
CHANGING_NAME = re.compile(
    r"(^|_)(total|lifetime|last(?!_name)|latest|recent|count|orders?|spent|spend|revenue|"
    r"balance|ltv|clv|"
    r"churn(ed)?|status|updated|cancel(l?ed)?)(_|$)"
)


def _words(column: str) -> str:
    """A column name's words in snake case, camelCase split too (``TotalSpent``, ``lastOrderAt``:
    ``total_spent``, ``last_order_at``), for :data:`CHANGING_NAME`."""
    return attribute_name(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column)).removeprefix("attr_")


def _excluded_columns(raw: RawTable, exclude: Collection[str]) -> set[str]:
    """The customers columns ``data.exclude_attributes`` names (in any case); a name that is
    no column of the file is an error, never ignored."""
    by_case = {c.lower(): c for c in raw.types if c != "_row"}
    unknown = [name for name in exclude if name.lower() not in by_case]
    if unknown:
        raise DataError(
            f"data.exclude_attributes: {', '.join(map(repr, unknown))} is not a column of "
            f"{raw.label} (columns: {', '.join(by_case.values())})"
        )
    return {by_case[name.lower()] for name in exclude}


def _warn_doubtful_attributes(
    con: duckdb.DuckDBPyConnection, raw: RawTable, found: dict[str, tuple[str, str]],
    origin: dict[str, str],
) -> None:  # fmt: skip
    """Attributes that probably change over time (by name), and categories with a value per
    customer (an email), which carry no signal: say so, with the setting that drops them."""
    changing = [origin[n] for n in found if CHANGING_NAME.search(_words(origin[n]))]
    if changing:
        warnings.warn(
            f"{raw.label}: attribute column(s) {', '.join(map(repr, changing))} look like values "
            "that change over time: attributes are read as they are now at every past cutoff, "
            "so a running total, a last-order date or a status leaks the outcome into training "
            "(list them in data.exclude_attributes)",
            UserWarning,
            stacklevel=5,
        )
    categories = [n for n, (_, kind) in found.items() if kind == "category"]
    if not categories:
        return
    counts = one_row(
        con,
        "SELECT count(*), "
        + ", ".join(f"count(DISTINCT {found[n][0]})" for n in categories)
        + f" FROM {raw.relation}",
    )
    rows, distinct = counts[0], counts[1:]
    unique = [
        origin[n]
        for n, d in zip(categories, distinct, strict=True)
        if rows >= 50 and d > 0.9 * rows
    ]
    if unique:
        warnings.warn(
            f"{raw.label}: attribute column(s) {', '.join(map(repr, unique))} have a different "
            "value for nearly every customer (an email, a name): as categories they carry no "
            "signal (list them in data.exclude_attributes)",
            UserWarning,
            stacklevel=5,
        )


def _attribute_exprs(
    con: duckdb.DuckDBPyConnection, raw: RawTable, exclude: Collection[str] = ()
) -> dict[str, tuple[str, str]]:
    """Customer attributes: numeric when every non-empty value is a number, else a category."""
    used = {raw.source(c) for c in raw.contract.column_names} | {"_row"}
    used |= _excluded_columns(raw, exclude)
    out: dict[str, tuple[str, str]] = {}
    origin: dict[str, str] = {}  # attribute name -> the column it came from
    for column, duck_type in raw.types.items():
        if column in used:
            continue
        name = attribute_name(column)
        if name in out:
            raise DataError(
                f"{raw.label}: columns {origin[name]!r} and {column!r} both become {name}; "
                "rename one"
            )
        origin[name] = column
        quoted = '"' + column.replace('"', '""') + '"'
        text = clean_value_text(quoted)
        # A number written with a leading zero (a ZIP or area code, 01234) is a code: text.
        (non_numeric,) = one_row(
            con,
            f"SELECT count(*) FROM {raw.relation} WHERE {text} IS NOT NULL "
            f"AND (TRY_CAST({raw.number_text(text)} AS DOUBLE) IS NULL "
            f"OR regexp_matches({text}, '^0[0-9]'))",
        )
        if non_numeric == 0 and duck_type.upper() not in {"DATE", "TIMESTAMP"}:
            if problem := ambiguous_points(con, raw, column):
                raise DataError(problem)
            out[name] = (f"TRY_CAST({raw.number_text(text)} AS DOUBLE)", "numeric")
        else:
            out[name] = (text, "category")
    _warn_doubtful_attributes(con, raw, out, origin)
    return out


def _register(
    con: duckdb.DuckDBPyConnection,
    location: Path,
    table: str,
    found: DatabaseTable | None,
    files: dict[str, Path],
) -> tuple[str, Path | None]:
    """Register the raw table as view ``raw_<table>``; return its label and, for a CSV file,
    its path (an empty label when there is no such table)."""
    view = f"raw_{table}"
    if found is not None:
        rows = "row_number() OVER ()" if found.is_view else "rowid + 1"
        try:
            con.execute(
                f"CREATE OR REPLACE VIEW {view} AS SELECT *, {rows} AS _row FROM {found.relation}"
            )
        except duckdb.Error as exc:
            raise DataError(f"{location.name}:{found.label}: not readable ({exc})") from exc
        return f"{location.name}:{found.label}", None
    path = files.get(table)
    if path is None:
        return "", None
    if path.name.lower().endswith((".csv", ".csv.gz")):
        _register_csv(con, path, view)
        return path.name, path
    if path.name.lower().endswith(JSON_SUFFIXES):
        _register_json_lines(con, path, view)
        return path.name, None
    if path.name.lower().endswith(".xlsx"):
        _register_excel(con, path, view)
        return path.name, None
    _register_parquet(con, path, view)
    return path.name, None


@dataclass(frozen=True)
class DatabaseTable:
    """A table or view of an attached DuckDB database."""

    schema: str
    name: str
    is_view: bool

    @property
    def label(self) -> str:
        return self.name if self.schema == "main" else f"{self.schema}.{self.name}"

    @property
    def relation(self) -> str:
        return f"src.{quote_name(self.schema)}.{quote_name(self.name)}"


def _database_tables(con: duckdb.DuckDBPyConnection, location: Path) -> dict[str, DatabaseTable]:
    """The contract tables in the attached database, by name in any case, in any schema
    (``main`` first; the same name in two other schemas is refused)."""
    rows = con.execute(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_catalog = 'src' ORDER BY table_schema <> 'main', table_schema, table_name"
    ).fetchall()
    found: dict[str, DatabaseTable] = {}
    for schema, name, kind in rows:
        key = name.lower()
        if key not in CONTRACTS:
            continue
        if key in found:
            first = found[key]
            if first.schema == "main" and schema != "main":
                continue
            raise DataError(
                f"{location}: more than one {key} table ({first.schema}.{first.name}, "
                f"{schema}.{name}); keep one"
            )
        found[key] = DatabaseTable(schema, name, kind.upper() == "VIEW")
    if not found.get("transactions"):
        names = ", ".join(f"{s}.{n}" for s, n, _ in rows) or "none"
        raise DataError(f"{location}: no transactions table in the database (tables: {names})")
    return found


def _expected(location: Path, table: str) -> str:
    """What a missing table's file should be named, and what the folder holds instead."""
    expected = f"expected {table}.csv or {table}.parquet"
    if location.is_file():
        return expected
    seen = sorted(p.name for p in location.iterdir() if not p.name.startswith("."))
    shown = ", ".join(seen[:10]) + (f" and {len(seen) - 10} more" if len(seen) > 10 else "")
    return f"{expected}; the folder holds {shown or 'no file'}"


def load_with(location: Path, data: DataSettings) -> Dataset:
    """:func:`load` with the data settings (column mapping, excluded attributes, amounts)."""
    return load(
        location,
        columns=data.columns,
        exclude_attributes=data.exclude_attributes,
        amount_scale=data.amount_scale,
        void_statuses=data.void_statuses,
        timezone=data.timezone,
    )


def load(
    location: Path,
    *,
    columns: dict[str, dict[str, str]] | None = None,
    exclude_attributes: Collection[str] = (),
    amount_scale: float = 1.0,
    void_statuses: Collection[str] | None = None,
    timezone: str = "UTC",
) -> Dataset:
    """Read, validate and type the raw tables at ``location`` (a folder or a .duckdb file);
    ``exclude_attributes``: customers columns not read as attributes; ``amount_scale``: what
    turns amounts as written into currency units (0.01 for amounts in cents);
    ``void_statuses``: order statuses that are no purchase (default: the settings');
    ``timezone``: the business's zone (IANA name): naive times are read as its local time,
    times with an offset or zone are converted to it, and days are its calendar days."""
    location = Path(location)
    columns = columns or {}
    if not location.exists():
        raise DataError(f"{location}: no such folder or DuckDB database")
    if location.is_file() and location.name.lower().endswith(SUFFIXES):
        raise DataError(
            f"{location}: a data file; pass the folder that holds it (tables are found by "
            f"name: transactions.csv, events.parquet, ...) or a DuckDB database"
        )
    _check_shared_mapping(columns)
    con = interrupts.register(duckdb.connect())  # Ctrl-C stops its queries
    try:
        con.execute(f"SET TimeZone = {quote_text(timezone)}")
    except duckdb.Error:
        raise DataError(
            f"data.timezone: unknown time zone {timezone!r} (expected an IANA name such as "
            "UTC, Europe/Berlin or America/New_York)"
        ) from None
    # Rows carry their place in the file (_row) and every query that hands rows on sorts
    # them: tables built here need not keep the order they were read in (about 1 s less of
    # the benchmark's features build).
    con.execute("SET preserve_insertion_order = false")
    # In Jupyter without ipywidgets DuckDB refuses the setting, and shows no bar anyway.
    with contextlib.suppress(duckdb.InvalidInputException):
        con.execute("SET enable_progress_bar = false")
    database: dict[str, DatabaseTable] | None = None
    if location.is_file():
        literal = str(location).replace("'", "''")
        try:
            con.execute(f"ATTACH '{literal}' AS src (READ_ONLY)")
        except duckdb.Error as exc:
            raise DataError(f"{location}: not a DuckDB database ({exc})") from exc
        database = _database_tables(con, location)
    files = find_table_files(location) if database is None else {}
    dataset = Dataset(con=con, sources={}, timezone=timezone)
    used: set[str] = set()  # '*' mapping targets some table used
    for name, contract in CONTRACTS.items():
        if database is not None and name not in database:
            label, csv_path = "", None
        else:
            found = database[name] if database is not None else None
            label, csv_path = _register(con, location, name, found, files)
        if not label:
            if contract.required:
                raise DataError(f"{location}: no {name} table ({_expected(location, name)})")
            con.execute(f"CREATE TABLE {name} ({EMPTY_TABLES[name]})")
            continue
        used |= _load_table(dataset, contract, label, csv_path, columns, exclude_attributes)
    if amount_scale != 1.0:
        # After validation, so that messages quote amounts as the file writes them.
        dataset.con.execute(f"UPDATE transactions SET amount = amount * {float(amount_scale)!r}")
    for table, mapping in columns.items():
        if table != "*" and mapping and table not in dataset.sources:
            target, source = next(iter(mapping.items()))
            raise DataError(
                f"column mapping {table}.{target}={source}: {location} has no {table} table "
                f"(tables read: {', '.join(dataset.sources.values())})"
            )
    if exclude_attributes and "customers" not in dataset.sources:
        raise DataError(
            f"data.exclude_attributes: {', '.join(map(repr, exclude_attributes))}: {location} "
            f"has no customers table to exclude them from (tables read: "
            f"{', '.join(dataset.sources.values())})"
        )
    for target, source in columns.get("*", {}).items():
        if target not in used:
            raise DataError(
                f"column mapping {target}={source}: no table has a column '{source}' "
                f"(tables read: {', '.join(dataset.sources.values())})"
            )
    _warn_unmatched_customers(dataset)
    _warn_odd_rows(dataset)
    _void_orders(dataset, DataSettings().void_statuses if void_statuses is None else void_statuses)
    _warn_repeated_rows(dataset)
    _warn_ids_in_another_case(dataset)
    _channel_markers_missing(dataset)
    return dataset


def _channel_markers_missing(dataset: Dataset) -> None:
    """A channel written as a missing-value marker (NULL, N/A, -) is missing, not a channel
    of its own. Channels are few: the distinct list (read once, and used by the features
    anyway) says whether a pass over the logs is needed at all."""
    markers = [c for c in dataset.channels() if c.strip().lower() in MISSING_MARKERS]
    if not markers:
        return
    listed = ", ".join("'" + m.replace("'", "''") + "'" for m in markers)
    for table in ("transactions", "events"):
        dataset.con.execute(f"UPDATE {table} SET channel = NULL WHERE channel IN ({listed})")
    dataset._channels = None


# ``financial_status``, ``Order State``; not a bare ``state`` (a shipping address's).
STATUS_LIKE = re.compile(
    r"(?:^|[ _\-])status$|(?:order|payment|financial|transaction)[ _\-]?state$", re.IGNORECASE
)


def _warn_unread_status(raw: RawTable) -> None:
    """A transactions column named like an order status (``financial_status``, ``Order
    State``) that is not read as one: its cancelled orders would count as purchases."""
    if raw.source("status") in raw.types:
        return
    for column in raw.types:
        if STATUS_LIKE.search(column.strip()):
            warnings.warn(
                f"{raw.label}: column {column!r} looks like an order status but is not read "
                f"as one: map it (--column status={column!r}) so that cancelled, voided and "
                "failed orders (data.void_statuses) count as no purchase",
                UserWarning,
                stacklevel=4,
            )
            return


def _void_orders(dataset: Dataset, statuses: Collection[str]) -> None:
    """Orders whose status says they never happened (cancelled, voided, a failed payment):
    their amount becomes 0, so that they count only as activity, and a warning names them
    (after the amount-0 warning, which is about the rows the file writes so)."""
    if not statuses:
        return
    void = f"lower(status) IN {text_list(sorted({s.strip().lower() for s in statuses}))}"
    count, shown = _odd_rows(dataset, "transactions", void, "status")
    if not count:
        return
    dataset.con.execute(f"UPDATE transactions SET amount = 0 WHERE {void}")
    warnings.warn(
        f"{dataset.sources['transactions']}: {count:,} row(s) with a status that is no "
        f"purchase (data.void_statuses: {shown}): read as amount 0, they count in no "
        "purchase, spend or refund feature (only as activity)",
        UserWarning,
        stacklevel=3,
    )


def _odd_rows(dataset: Dataset, table: str, where: str, column: str = "ts") -> tuple[int, str]:
    """How many rows of ``table`` match ``where``, and the first three, named with their
    ``column``."""
    rows = dataset.con.execute(
        f"SELECT _row, CAST({column} AS VARCHAR), count(*) OVER () FROM {table} "
        f"WHERE {where} ORDER BY _row LIMIT 3"
    ).fetchall()
    if not rows:
        return 0, ""
    places = dataset.row_places(table, [r[0] for r in rows])
    count = int(rows[0][2])
    shown = ", ".join(f"{places[r[0]]} {r[1]}" for r in rows)
    return count, shown + (", ..." if count > len(rows) else "")


def _warn_odd_rows(dataset: Dataset) -> None:
    """Rows that are valid but probably not what the export meant: dated after today (a
    typo such as 2099, which would also make label windows look covered by data), and
    orders of amount 0 (neither a purchase nor a refund)."""
    # After today anywhere: from the start of tomorrow in the data's zone (an export in a
    # zone ahead of it may hold this evening's orders).
    zone = dataset.timezone
    today = datetime.now(UTC if zone == "UTC" else ZoneInfo(zone)).date()
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time())
    _, last = dataset.date_range()
    if last is not None and last >= tomorrow:
        for table in ("transactions", "events"):
            count, shown = _odd_rows(dataset, table, f"ts >= TIMESTAMP '{tomorrow:%Y-%m-%d}'")
            if count:
                warnings.warn(
                    f"{dataset.sources[table]}: {count:,} row(s) dated after today "
                    f"({today:%Y-%m-%d}, {zone}): {shown}; they are read as given (label windows "
                    "and the data's last day count them)",
                    UserWarning,
                    stacklevel=3,
                )
    if dataset.has("customers"):  # (a table without the column holds NULLs)
        future = f"signup_date >= TIMESTAMP '{tomorrow:%Y-%m-%d}'"
        count, shown = _odd_rows(dataset, "customers", future, "signup_date")
        if count:
            warnings.warn(
                f"{dataset.sources['customers']}: {count:,} signup date(s) after today "
                f"({today:%Y-%m-%d}, {zone}): {shown}; a customer is known from the signup on, "
                "so these have no signup or attributes at any cutoff before it",
                UserWarning,
                stacklevel=3,
            )
    count, shown = _odd_rows(dataset, "transactions", "amount = 0")
    if count:
        warnings.warn(
            f"{dataset.sources['transactions']}: {count:,} row(s) with amount 0 ({shown}): "
            "neither a purchase (amount > 0) nor a refund (< 0), so they count in no purchase, "
            "spend or refund feature (only as activity)",
            UserWarning,
            stacklevel=3,
        )


def _warn_repeated_rows(dataset: Dataset) -> None:
    """Transactions without order ids whose customer, moment (with a time of day) and amount
    repeat another row's: a line-item export repeats its order's total on every line, and
    each copy is counted as spend. Same-priced items bought at once look so too, so this is
    said, not refused. (With order ids, a repeated one is refused instead; date-only
    timestamps make equal rows common, and are not looked at.)"""
    con = dataset.con
    ids, timed = one_row(
        con,
        "SELECT count(order_id), bool_or(ts <> date_trunc('day', ts)) FROM transactions",
    )
    if ids or not timed:
        return
    if distinct_hashes(con, "transactions", "customer_id, ts, amount", where="true"):
        return
    repeated = (
        "SELECT _row, customer_id, CAST(ts AS VARCHAR) AS ts, amount, row_number() OVER "
        "(PARTITION BY customer_id, ts, amount ORDER BY _row) AS copy "
        "FROM transactions"
    )
    extra = con.execute(
        f"SELECT _row, customer_id, ts, amount, count(*) OVER () FROM ({repeated}) AS r "
        f"WHERE copy > 1 ORDER BY _row LIMIT 3"
    ).fetchall()
    if not extra:
        return
    total = int(extra[0][4])
    places = dataset.row_places("transactions", [r[0] for r in extra])
    shown = ", ".join(f"{places[r[0]]} ({r[1]}, {r[2]}, {r[3]:g})" for r in extra)
    warnings.warn(
        f"{dataset.sources['transactions']}: {total:,} row(s) repeat an earlier row's "
        f"customer, time and amount exactly, with no order id: {shown}"
        f"{', ...' if total > len(extra) else ''}; each adds its amount to the spend. A "
        "line-item export repeats the order's total on every line: keep one row per order, or map "
        "its order number (--column order_id=NAME) to have repeats refused",
        UserWarning,
        stacklevel=3,
    )


ID_SAMPLE = 20_000  # ids a table's case style is judged on


def _warn_ids_in_another_case(dataset: Dataset) -> None:
    """Ids that differ only in case (``ann@shop.com`` in the orders, ``Ann@Shop.com`` in the
    CRM's events) are customers of their own: say so. Only when the tables' ids are written
    in different styles (the share with an upper-case letter, on a sample of each) is the
    exact, slower check run."""
    con = dataset.con
    tables = [t for t in ("transactions", "events", "customers") if dataset.row_counts.get(t)]
    if len(tables) < 2:
        return
    shares = []
    for table in tables:
        (share,) = one_row(
            con,
            f"SELECT avg(CASE WHEN customer_id <> lower(customer_id) THEN 1 ELSE 0 END) "
            f"FROM (SELECT customer_id FROM {table} USING SAMPLE reservoir({ID_SAMPLE} ROWS) "
            "REPEATABLE (42)) AS s",
        )
        shares.append(float(share or 0.0))
    if max(shares) - min(shares) < 0.01:
        return
    ids = " UNION ".join(f"SELECT customer_id FROM {t}" for t in tables)
    found = con.execute(
        f"SELECT min(customer_id), max(customer_id), count(*) OVER () FROM ({ids}) AS i "
        f"GROUP BY lower(customer_id) HAVING count(*) > 1 ORDER BY 1 LIMIT 3"
    ).fetchall()
    if not found:
        return
    shown = ", ".join(f"{a!r} ~ {b!r}" for a, b, _ in found)
    count = int(found[0][2])
    warnings.warn(
        f"{count:,} customer id(s) are written in another case elsewhere in the data "
        f"({shown}{', ...' if count > len(found) else ''}): each spelling is a customer of "
        "its own; write ids the same way in every table (emails in lower case, say)",
        UserWarning,
        stacklevel=3,
    )


def _warn_unmatched_customers(dataset: Dataset) -> None:
    """Customer rows no transaction or event names, and without a signup date, are never
    known at any cutoff: say so (ids written differently across tables, as ``007`` and ``7``,
    end up here)."""
    if not dataset.row_counts.get("customers"):
        return
    (undated,) = one_row(dataset.con, "SELECT count(*) FROM customers WHERE signup_date IS NULL")
    if not undated:  # every row is known from its signup date on (no scan of the logs)
        return
    rows = dataset.con.execute(
        """
        SELECT c._row, c.customer_id, count(*) OVER () AS n
        FROM customers c
        WHERE c.signup_date IS NULL
          AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.customer_id = c.customer_id)
          AND NOT EXISTS (SELECT 1 FROM events e WHERE e.customer_id = c.customer_id)
        ORDER BY c._row
        LIMIT 3
        """
    ).fetchall()
    if rows:
        shown = ", ".join(f"{cid!r} (row {row})" for row, cid, _ in rows)
        count = int(rows[0][2])
        verbs = ("s match", "have") if count > 1 else (" matches", "has")
        warnings.warn(
            f"{dataset.sources['customers']}: {count:,} customer row{verbs[0]} no transaction "
            f"or event and {verbs[1]} no signup_date ({shown}"
            f"{', ...' if count > len(rows) else ''}): never scored; check that ids are "
            "written the same way in every table",
            UserWarning,
            stacklevel=3,
        )


def _load_table(
    dataset: Dataset,
    contract: TableContract,
    label: str,
    csv_path: Path | None,
    columns: dict[str, dict[str, str]],
    exclude_attributes: Collection[str] = (),
) -> set[str]:
    """Load one table; return the '*' mapping targets it used."""
    con = dataset.con
    view = f"raw_{contract.name}"
    types = _column_types(con, view)
    raw = RawTable(
        contract=contract,
        label=label,
        relation=view,
        mapping=_mapping_for(contract.name, columns, types),
        types=types,
        csv_path=csv_path,
        timezone=dataset.timezone,
    )
    check_columns(raw)
    if contract.name == "transactions":
        _warn_unread_status(raw)
    for target, source in columns.get(contract.name, {}).items():
        if raw.source(target) not in types:  # optional (check_columns names required ones)
            names = ", ".join(c for c in types if c != "_row")
            raise DataError(
                f"{label}: column mapping {contract.name}.{target}={source}: no column "
                f"'{source}' (columns found: {names})"
            )
    attributes: dict[str, str] = {}
    if contract.keeps_other_columns:
        found = _attribute_exprs(con, raw, exclude_attributes)
        attributes = {name: expr for name, (expr, _) in found.items()}
        dataset.attributes = {name: kind for name, (_, kind) in found.items()}
    # One read of the source into a typed table; the checks then run in memory.
    con.execute(f"CREATE TABLE {contract.name} AS {typed_select(raw, attributes)}")
    validate(con, raw, contract.name)
    for helper in raw_copies(raw):
        con.execute(f"ALTER TABLE {contract.name} DROP COLUMN {helper}")
    (count,) = one_row(con, f"SELECT count(*) FROM {contract.name}")
    if count == 0 and contract.required:
        raise DataError(f"{label}: no rows (a header only); {contract.name} needs at least one")
    dataset.row_counts[contract.name] = int(count)
    dataset.sources[contract.name] = label
    dataset.mappings[contract.name] = dict(raw.mapping)
    if not contract.keeps_other_columns:
        read = {raw.source(c) for c in contract.column_names} | {"_row"}
        dataset.unread[contract.name] = [c for c in types if c not in read]
    if csv_path is not None:
        dataset.csv_paths[contract.name] = csv_path
    shared = columns.get("*", {})
    return {
        t
        for t, source in raw.mapping.items()
        if t in shared and shared[t].casefold() == source.casefold() and source in types
    }
