"""The data contract: which tables and columns clm reads, and what each value must look like.

Validation runs in DuckDB over the raw table (one scan for all checks) and raises a
:class:`~clm.errors.DataError` that names the file, the rows (1-based, as in the file), the
column and the expected form, with the first bad rows and their count. Nothing is dropped.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np

from clm.errors import DataError
from features.sql import one_row

__all__ = [
    "CONTRACTS",
    "EXAMPLES_SHOWN",
    "MAX_NUMBER",
    "MAX_WHOLE_ID",
    "ColumnSpec",
    "RawTable",
    "TableContract",
    "check_columns",
    "clean_text",
    "column_label",
    "csv_delimiter",
    "internal_name",
    "quote_name",
    "raw_copies",
    "row_places",
    "typed_select",
    "validate",
]

Kind = Literal["id", "timestamp", "number", "string"]
EXAMPLES_SHOWN = 5
MAX_NUMBER = 1e15  # amounts and values are under 10^15 in size
MAX_WHOLE_ID = 2**53  # a number column read as ids: whole numbers below this (exact as DOUBLE)

EXPECTED: dict[Kind, str] = {
    "id": "a non-empty string",
    "timestamp": "an ISO date or datetime from 1900 to 2199 such as 2024-03-01 or "
    "2024-03-01T14:30:00Z",
    "number": "a finite number under 10^15 in size such as 19.99 (negative for a refund)",
    "string": "text",
}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    required: bool
    description: str
    expected: str | None = None  # how messages describe a good value, when not EXPECTED[kind]

    @property
    def expected_form(self) -> str:
        return self.expected or EXPECTED[self.kind]


@dataclass(frozen=True)
class TableContract:
    name: str
    required: bool
    columns: tuple[ColumnSpec, ...]
    unique: str | None = None
    keeps_other_columns: bool = False  # customers: any other column is a static attribute

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


CONTRACTS: dict[str, TableContract] = {
    "transactions": TableContract(
        name="transactions",
        required=True,
        columns=(
            ColumnSpec("customer_id", "id", True, "who bought"),
            ColumnSpec("timestamp", "timestamp", True, "when (naive: UTC or data.timezone)"),
            ColumnSpec("amount", "number", True, "currency units; negative = refund"),
            ColumnSpec("order_id", "id", False, "unique per row when given"),
            ColumnSpec("channel", "string", False, "web, app, store, ..."),
            ColumnSpec("status", "string", False, "cancelled, voided, failed: no purchase"),
        ),
        unique="order_id",
    ),
    "events": TableContract(
        name="events",
        required=False,
        columns=(
            ColumnSpec("customer_id", "id", True, "who"),
            ColumnSpec("timestamp", "timestamp", True, "when (naive: UTC or data.timezone)"),
            ColumnSpec("event_type", "id", True, "visit, signup, session, nps, ..."),
            ColumnSpec(
                "value",
                "number",
                False,
                "e.g. the NPS answer 0-10",
                expected="a finite number under 10^15 in size such as 8 (an NPS answer is 0-10)",
            ),
            ColumnSpec("channel", "string", False, "web, app, email, store, ..."),
        ),
    ),
    "customers": TableContract(
        name="customers",
        required=False,
        columns=(
            ColumnSpec("customer_id", "id", True, "one row per customer"),
            ColumnSpec("signup_date", "timestamp", False, "when the customer signed up"),
        ),
        unique="customer_id",
        keeps_other_columns=True,
    ),
}


@dataclass(frozen=True)
class RawTable:
    """A table as read from its source, registered in DuckDB with a 1-based ``_row`` column."""

    contract: TableContract
    label: str  # how messages name it: 'transactions.csv'
    relation: str  # the DuckDB view holding the raw rows
    mapping: dict[str, str]  # contract name -> column name in the source
    types: dict[str, str]  # source column name -> DuckDB type
    csv_path: Path | None = None  # a CSV file: messages also give the line of each row
    timezone: str = "UTC"  # the session's TimeZone: naive times are read in it, moments to it

    def source(self, column: str) -> str:
        return self.mapping.get(column, column)

    def places(self, rows: list[int]) -> dict[int, str]:
        return row_places(self.csv_path, rows)

    def column_label(self, column: str) -> str:
        return column_label(self.source(column), column)

    @property
    def decimal_comma(self) -> bool:
        """A ';'-separated CSV file, as a European spreadsheet writes it: its numbers may have
        a decimal comma (12,50)."""
        return self.csv_path is not None and csv_delimiter(self.csv_path) == ";"

    def number_text(self, text: str) -> str:
        """SQL: number text as DuckDB reads it, in a file that may have a decimal comma: the
        comma as a point (12,50), and points before it as thousands marks when they group
        by three (1.234,56). Any other number with both marks (1,234.56) stays unreadable
        and is named; one with points only (1.234) is read with a decimal point."""
        if not self.decimal_comma:
            return text
        grouped = f"regexp_full_match({text}, '[+-]?[0-9]{{1,3}}(\\.[0-9]{{3}})+,[0-9]+')"
        return (
            f"CASE WHEN {text} NOT LIKE '%,%' THEN {text} "
            f"WHEN {text} NOT LIKE '%.%' THEN replace({text}, ',', '.') "
            f"WHEN {grouped} THEN replace(replace({text}, '.', ''), ',', '.') "
            f"ELSE {text} END"
        )


def column_label(source: str, column: str) -> str:
    """How messages name a contract column read from ``source``."""
    return f"'{source}'" if source == column else f"'{source}' (mapped to {column})"


def row_places(csv_path: Path | None, rows: list[int]) -> dict[int, str]:
    """How messages name each row: ``row 7``, in a CSV file ``row 7 (line 9)``."""
    lines = csv_record_lines(csv_path, rows) if csv_path is not None else {}
    return {r: f"row {r} (line {lines[r]})" if r in lines else f"row {r}" for r in rows}


def ragged_record(path: Path, delimiter: str = ",", *, more_only: bool = False) -> str:
    """The first record of a CSV file with another number of fields than its header (more
    fields only, with ``more_only``), named by its line (error path only: a Python pass)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, [])
        start = reader.line_num + 1
        for fields in reader:
            if len(fields) > len(header) or (
                not more_only and fields and len(fields) < len(header)
            ):
                return (
                    f"line {start} has {len(fields)} fields, the header {len(header)}: "
                    f"expected one field per column"
                )
            start = reader.line_num + 1
    return "a row has another number of fields than the header"


# Separators of CSV exports, in the order they are tried on the header line: a European
# spreadsheet writes ';' (its decimal separator being the comma), others a tab or '|'.
DELIMITERS = (",", ";", "\t", "|")


def csv_delimiter(path: Path) -> str:
    """The separator of a CSV file: of DELIMITERS, the one that splits its header line into
    the most fields (a quoted name may hold another), the first on a tie."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
    except UnicodeDecodeError:
        return ","  # the header check names the encoding
    fields = {d: len(next(csv.reader([first], delimiter=d), [])) for d in DELIMITERS}
    return max(DELIMITERS, key=lambda d: (fields[d], -DELIMITERS.index(d)))


def csv_record_lines(path: Path, rows: Iterable[int]) -> dict[int, int]:
    """The line of the file each of these records starts on (records 1-based after the
    header; blank lines are no records and a quoted value may span lines, as the reader
    sees them). Read on the error path only, up to the last record asked for."""
    wanted = set(rows)
    last, found = max(wanted, default=0), {}
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
        # The separator matters: a quoted line break is only seen as quoted with the right one.
        reader = csv.reader(handle, delimiter=csv_delimiter(path))
        next(reader, None)  # the header
        record, start = 0, reader.line_num + 1
        for fields in reader:
            if fields:
                record += 1
                if record in wanted:
                    found[record] = start
                if record >= last:
                    break
            start = reader.line_num + 1
    return found


def quote_name(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _is_text(duck_type: str) -> bool:
    """Text, or a column with no values at all (DuckDB names its type "NULL", quoted)."""
    return duck_type.strip('"').upper() in {"VARCHAR", "STRING", "TEXT", "NULL"}


def _is_exact_id(duck_type: str) -> bool:
    """A type whose values read as id text exactly: text, integers, a DECIMAL without a
    fraction, UUID, ENUM (a DuckDB database's categories)."""
    upper = duck_type.upper()
    return (
        _is_text(duck_type)
        or upper in INTEGER_TYPES
        or upper == "UUID"
        or upper.startswith("ENUM")
        or (upper.startswith("DECIMAL") and upper.replace(" ", "").endswith(",0)"))
    )


INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}


def _is_float(duck_type: str) -> bool:
    """A type whose values may be fractional (or, for FLOAT and DOUBLE, infinite)."""
    return duck_type.upper() in FLOAT_TYPES or duck_type.upper().startswith("DECIMAL")


def _is_numeric(duck_type: str) -> bool:
    """A number type (a BOOLEAN is no amount: true/false would read as 1/0)."""
    return duck_type.upper() in INTEGER_TYPES or _is_float(duck_type)


# What exports write for a missing value (pandas reads the same as NaN; 'NA' stays text: it
# is also a code, North America or Namibia).
MISSING_MARKERS = ("null", "n/a", "nan", "none", "#n/a", "<na>", "-")


def missing_marker(text: str) -> str:
    """SQL: the (trimmed) text is a missing-value marker such as NULL or N/A."""
    markers = ", ".join(f"'{m}'" for m in MISSING_MARKERS)
    return f"(strlen({text}) <= 4 AND lower({text}) IN ({markers}))"


def clean_text(expr: str) -> str:
    """Text without surrounding spaces, NULL when empty (trim only runs where it matters)."""
    text = f"CAST({expr} AS VARCHAR)"
    return (
        f"CASE WHEN {text} LIKE ' %' OR {text} LIKE '% ' THEN NULLIF(trim({text}), '') "
        f"ELSE NULLIF({text}, '') END"
    )


def clean_value_text(expr: str) -> str:
    """:func:`clean_text`, and NULL for a missing-value marker (for customer attributes; the
    logs' ids refuse a marker instead, see :func:`_bad_predicates`)."""
    text = clean_text(expr)
    return f"CASE WHEN {missing_marker(text)} THEN NULL ELSE {text} END"


def _value_text(spec: ColumnSpec, col: str) -> str:
    """The text of a date or number column: a missing-value marker is missing in an optional
    column (a signup_date or an event value written NULL); in a required one it is refused."""
    return clean_text(col) if spec.required else clean_value_text(col)


def _type_error(table: RawTable, spec: ColumnSpec, duck_type: str) -> DataError:
    expected = spec.expected_form
    if spec.kind == "id":
        expected += " (or a whole number)"
    return DataError(
        f"{table.label}: column {table.column_label(spec.name)} has type {duck_type}; "
        f"expected {expected}"
    )


def _whole_number_text(col: str) -> str:
    """A number column read as an id: whole numbers as integer text (a pandas export writes
    the id 2474 as 2474.0 once the column has a gap), anything else NULL (and reported)."""
    value = f"CAST({col} AS DOUBLE)"
    return (
        f"CASE WHEN {value} = trunc({value}) AND abs({value}) < {MAX_WHOLE_ID} "
        f"THEN CAST(CAST({value} AS BIGINT) AS VARCHAR) END"
    )


EARLIEST_MOMENT = "TIMESTAMP '1900-01-01 00:00:00'"
LATEST_MOMENT = "TIMESTAMP '2199-12-31 23:59:59.999999'"


def _offset_text(text: str) -> str:
    """ISO text with an offset written after a space, as Shopify writes it
    (``2024-03-01 14:30:00 -0500``), joined to the time so that DuckDB reads the offset."""
    spaced = f"({text} LIKE '% +%' OR {text} LIKE '% -%')"  # cheap: the regex runs rarely
    joined = f"regexp_replace({text}, '(\\d:\\d\\d(?:\\.\\d+)?) ([+-]\\d\\d:?\\d\\d)$', '\\1\\2')"
    return f"CASE WHEN {spaced} THEN {joined} ELSE {text} END"


def normalized_expr(table: RawTable, spec: ColumnSpec) -> str:
    """The SQL that turns the raw column into its contract type (NULL where it cannot)."""
    source = table.source(spec.name)
    if source not in table.types:
        target = {"timestamp": "TIMESTAMP", "number": "DOUBLE"}.get(spec.kind, "VARCHAR")
        return f"CAST(NULL AS {target})"
    col, duck_type = quote_name(source), table.types[source]
    if spec.kind == "id":
        if _is_exact_id(duck_type):
            return clean_text(col)
        if _is_float(duck_type):
            return _whole_number_text(col)
        raise _type_error(table, spec, duck_type)
    if spec.kind == "string":
        return clean_text(col)
    if spec.kind == "timestamp":
        # A TIMESTAMPTZ holds UTC microseconds: in UTC they are read as naive UTC (cheaper
        # than a cast); in another zone the cast gives its local time (the session's zone).
        def local(moment: str) -> str:
            if table.timezone == "UTC":
                return f"make_timestamp(epoch_us({moment}))"
            return f"CAST({moment} AS TIMESTAMP)"

        if _is_text(duck_type):
            text = _offset_text(_value_text(spec, col))
            moment = local(f"TRY_CAST({text} AS TIMESTAMPTZ)")
        elif duck_type.upper() in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
            moment = local(col)
        elif duck_type.upper() == "TIMESTAMPTZ_NS":  # pandas' tz-aware datetimes in Parquet
            moment = local(f"CAST({col} AS TIMESTAMPTZ)")
        elif duck_type.upper().startswith(("TIMESTAMP", "DATE")):
            moment = f"CAST({col} AS TIMESTAMP)"
        else:
            raise _type_error(table, spec, duck_type)
        # A placeholder such as 9999-12-31 or 0001-01-01 ("never", "unknown") is no moment.
        inside = f"{moment} BETWEEN {EARLIEST_MOMENT} AND {LATEST_MOMENT}"
        return f"CASE WHEN {inside} THEN {moment} END"
    if _is_text(duck_type):
        # DuckDB reads 1_000 as 1000, as Python does; an export never writes it so.
        text = table.number_text(_value_text(spec, col))
        parsed = f"TRY_CAST(CASE WHEN NOT contains({text}, '_') THEN {text} END AS DOUBLE)"
    elif _is_numeric(duck_type):
        parsed = f"CAST({col} AS DOUBLE)"
    else:
        raise _type_error(table, spec, duck_type)
    # Finite and under 10^15 (a quadrillion currency units): sums of 10M such values stay
    # finite and exact to the cent; NaN and infinities fail the test.
    return f"CASE WHEN abs({parsed}) < {MAX_NUMBER:.0e} THEN {parsed} END"


def _raw_copy(table: RawTable, spec: ColumnSpec) -> str | None:
    """The value as read, where the typed value may be NULL for a present but bad value, to
    tell 'missing' from 'bad': an optional value parsed from text, an optional number that
    may be infinite, an id read from a number column."""
    source = table.source(spec.name)
    if source not in table.types:
        return None
    col, duck_type = quote_name(source), table.types[source]
    if spec.kind == "id":
        return None if _is_exact_id(duck_type) else f"CAST({col} AS DOUBLE)"
    if spec.required or spec.kind not in ("number", "timestamp"):
        return None
    if _is_text(duck_type):
        return clean_value_text(col)
    if spec.kind == "number" and _is_numeric(duck_type):  # infinite, or 10^15 or more
        return f"CAST({col} AS DOUBLE)"
    if spec.kind == "timestamp":  # a date outside 1900-2199 (a placeholder such as 9999-12-31)
        return f"CAST({col} AS VARCHAR)"
    return None


def _bad_predicates(table: RawTable, spec: ColumnSpec) -> list[tuple[str, str]]:
    """Over the typed table: which rows break a rule for this column, and what they are."""
    name = internal_name(spec.name)
    if table.source(spec.name) not in table.types:
        return []
    form = spec.expected_form.split(" such as")[0]
    raw = _raw_copy(table, spec) is not None
    if spec.kind == "id" and raw:  # read from a number column
        fractional = (
            f"(_raw_{name} IS NOT NULL AND {name} IS NULL)",
            "not a whole number below 2^53 in size",
        )
        return [(f"_raw_{name} IS NULL", "empty"), fractional] if spec.required else [fractional]
    if spec.required:
        if spec.kind == "id":
            empty = "empty or a missing-value marker (NULL, N/A, ...)"
            return [(f"({name} IS NULL OR {missing_marker(name)})", empty)]
        return [(f"{name} IS NULL", f"not {form}")]
    if raw:
        return [(f"(_raw_{name} IS NOT NULL AND {name} IS NULL)", f"not {form}")]
    return []


def check_columns(table: RawTable) -> None:
    """Every required column is there (after the mapping), or a DataError naming the fix."""
    missing = [
        spec.name
        for spec in table.contract.columns
        if spec.required and table.source(spec.name) not in table.types
    ]
    if missing:
        found = ", ".join(c for c in table.types if c != "_row") or "none"
        # A mapping to a column the file lacks (a typo, most often) is named on its own.
        mapped = [m for m in missing if table.source(m) != m]
        if mapped:
            target = mapped[0]
            raise DataError(
                f"{table.label}: column mapping {target}={table.source(target)}: no column "
                f"'{table.source(target)}' (columns found: {found})"
            )
        names = ", ".join(f"'{table.source(m)}'" for m in missing)
        raise DataError(
            f"{table.label}: required column {names} missing (columns found: {found}); "
            f"map another column to it with --column {table.contract.name}.{missing[0]}=NAME"
        )


def _shown(con: duckdb.DuckDBPyConnection, table: RawTable, column: str, rows: list[int]) -> str:
    """The first bad rows with their values as written in the source."""
    return _shown_source(con, table, table.source(column), rows)


def _shown_source(
    con: duckdb.DuckDBPyConnection, table: RawTable, source: str, rows: list[int]
) -> str:
    """The first bad rows with their values in the source column ``source``."""
    values = dict(
        con.execute(
            f"SELECT _row, coalesce(CAST({quote_name(source)} AS VARCHAR), '') "
            f"FROM {table.relation} "
            f"WHERE _row IN ({', '.join(str(r) for r in rows)})"
        ).fetchall()
    )
    places = table.places(rows)
    return ", ".join(f"{places[r]} {values.get(r, '')!r}" for r in rows)


def _problem(
    con: duckdb.DuckDBPyConnection,
    table: RawTable,
    spec: ColumnSpec,
    typed: str,
    pred: str,
    what: str,
) -> str | None:
    (count,) = one_row(con, f"SELECT count(*) FROM {typed} WHERE {pred}")
    if not count:
        return None
    rows = [
        r[0]
        for r in con.execute(
            f"SELECT _row FROM {typed} WHERE {pred} ORDER BY _row LIMIT {EXAMPLES_SHOWN}"
        ).fetchall()
    ]
    more = f" and {count - len(rows)} more" if count > len(rows) else ""
    return (
        f"{table.label}: column {table.column_label(spec.name)}: {count} value(s) {what} "
        f"(expected {spec.expected_form}): {_shown(con, table, spec.name, rows)}{more}"
    )


def distinct_hashes(
    con: duckdb.DuckDBPyConnection, typed: str, columns: str, where: str | None = None
) -> bool:
    """True when no two rows' ``columns`` (one, or several: ``a, b``) share a 64-bit hash,
    so no two are equal: a sort of 8-byte numbers (0.6 s on the benchmark's 10M order ids)
    in place of a GROUP BY over 10M distinct strings (2.1 s). False (some hashes repeat)
    leaves it to the exact check, which also finds the rows. Rows with a NULL of a single
    column are left out, unless ``where`` says which rows count."""
    where = where or f"{columns} IS NOT NULL"
    hashes = np.sort(
        np.asarray(
            con.execute(f"SELECT hash({columns}) AS h FROM {typed} WHERE {where}").fetchnumpy()["h"]
        )
    )
    return not bool((hashes[1:] == hashes[:-1]).any())


def _duplicate_problem(con: duckdb.DuckDBPyConnection, table: RawTable, typed: str) -> str | None:
    unique = table.contract.unique
    if unique is None or table.source(unique) not in table.types:
        return None
    if distinct_hashes(con, typed, unique):
        return None
    # An order id written as a missing-value marker (N/A on every line) is missing, no key.
    repeated = (
        f"SELECT {unique} AS k FROM {typed} WHERE {unique} IS NOT NULL "
        f"AND NOT {missing_marker(unique)} "
        f"GROUP BY {unique} HAVING count(*) > 1"
    )
    (keys,) = one_row(con, f"SELECT count(*) FROM ({repeated}) AS r")
    if not keys:
        return None
    dupes = f"SELECT _row FROM {typed} WHERE {unique} IN (SELECT k FROM ({repeated}) AS r)"
    (total,) = one_row(con, f"SELECT count(*) FROM ({dupes}) AS d")
    rows = [
        r[0]
        for r in con.execute(
            f"SELECT _row FROM ({dupes}) AS d ORDER BY _row LIMIT {EXAMPLES_SHOWN}"
        ).fetchall()
    ]
    more = f" and {total - len(rows)} more" if total > len(rows) else ""
    return (
        f"{table.label}: column {table.column_label(unique)}: {total} rows share a value "
        f"(expected each {unique} once): {_shown(con, table, unique, rows)}{more}"
    )


def ambiguous_points(con: duckdb.DuckDBPyConnection, table: RawTable, source: str) -> str | None:
    """In a file with decimal commas, a number column (``source`` as written) that has both
    a decimal comma (12,50) and points that group by three with no comma (1.234): that is
    1234 where the column's points are thousands marks, 1.234 where they are decimal points.
    Read either way it could be a thousand times wrong, so its rows are named."""
    if not table.decimal_comma or not _is_text(table.types.get(source, "")):
        return None
    text = clean_text(quote_name(source))
    comma = f"regexp_full_match({text}, '[+-]?[0-9.]*[0-9],[0-9]+')"
    points = f"regexp_full_match({text}, '[+-]?[0-9]{{1,3}}(\\.[0-9]{{3}})+')"
    commas, count = one_row(
        con,
        f"SELECT count(*) FILTER (WHERE {comma}), count(*) FILTER (WHERE {points}) "
        f"FROM {table.relation}",
    )
    if not commas or not count:
        return None
    rows = [
        r[0]
        for r in con.execute(
            f"SELECT _row FROM {table.relation} WHERE {points} ORDER BY _row LIMIT {EXAMPLES_SHOWN}"
        ).fetchall()
    ]
    more = f" and {count - len(rows)} more" if count > len(rows) else ""
    label = column_label(source, next((c for c, s in table.mapping.items() if s == source), source))
    return (
        f"{table.label}: column {label}: {count} value(s) with points only in a column with "
        f"decimal commas ({commas} value(s) such as 12,50), read a thousand times apart as "
        f"thousands marks or as decimal points (expected 1234 or 1.234,00 for one thousand "
        f"two hundred thirty-four, 1,234 for one point two three four): "
        f"{_shown_source(con, table, source, rows)}{more}"
    )


def validate(con: duckdb.DuckDBPyConnection, table: RawTable, typed: str) -> None:
    """Check the typed copy ``typed`` of ``table``; one DataError lists every broken rule."""
    problems = []
    for spec in table.contract.columns:
        for pred, what in _bad_predicates(table, spec):
            if problem := _problem(con, table, spec, typed, pred, what):
                problems.append(problem)
        if spec.kind == "number" and (
            problem := ambiguous_points(con, table, table.source(spec.name))
        ):
            problems.append(problem)
    if (duplicate := _duplicate_problem(con, table, typed)) is not None:
        problems.append(duplicate)
    if problems:
        raise DataError("; ".join(problems))


def typed_select(table: RawTable, attributes: dict[str, str] | None = None) -> str:
    """SELECT of ``_row``, the contract columns in their types, the raw copies and attributes."""
    parts = ["_row"]
    parts += [
        f"{normalized_expr(table, spec)} AS {internal_name(spec.name)}"
        for spec in table.contract.columns
    ]
    parts += [
        f"{raw} AS _raw_{internal_name(spec.name)}"
        for spec in table.contract.columns
        if (raw := _raw_copy(table, spec)) is not None
    ]
    parts += [f"{expr} AS {quote_name(name)}" for name, expr in (attributes or {}).items()]
    return f"SELECT {', '.join(parts)} FROM {table.relation}"


def raw_copies(table: RawTable) -> list[str]:
    """The helper columns :func:`typed_select` adds for validation only."""
    return [
        f"_raw_{internal_name(spec.name)}"
        for spec in table.contract.columns
        if _raw_copy(table, spec) is not None
    ]


def internal_name(name: str) -> str:
    """'timestamp' is a keyword in SQL dialects; inside clm it is 'ts'."""
    return "ts" if name == "timestamp" else name
