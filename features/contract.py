"""The data contract: which tables and columns clm reads, and what each value must look like.

Validation runs in DuckDB over the raw table (one scan for all checks) and raises a
:class:`~clm.errors.DataError` that names the file, the rows (1-based, as in the file), the
column and the expected form, with the first bad rows and their count. Nothing is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import duckdb

from clm.errors import DataError
from features.sql import one_row

__all__ = [
    "CONTRACTS",
    "ColumnSpec",
    "RawTable",
    "TableContract",
    "normalized_select",
    "validate",
]

Kind = Literal["id", "timestamp", "number", "string"]
EXAMPLES_SHOWN = 5

EXPECTED: dict[Kind, str] = {
    "id": "a non-empty string",
    "timestamp": "an ISO date or datetime such as 2024-03-01 or 2024-03-01T14:30:00Z",
    "number": "a finite number such as 19.99 (negative for a refund)",
    "string": "text",
}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    required: bool
    description: str


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
            ColumnSpec("timestamp", "timestamp", True, "when (naive means UTC)"),
            ColumnSpec("amount", "number", True, "currency units; negative = refund"),
            ColumnSpec("order_id", "id", False, "unique per row when given"),
            ColumnSpec("channel", "string", False, "web, app, store, ..."),
        ),
        unique="order_id",
    ),
    "events": TableContract(
        name="events",
        required=False,
        columns=(
            ColumnSpec("customer_id", "id", True, "who"),
            ColumnSpec("timestamp", "timestamp", True, "when (naive means UTC)"),
            ColumnSpec("event_type", "id", True, "visit, signup, session, nps, ..."),
            ColumnSpec("value", "number", False, "e.g. the NPS answer 0-10"),
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
    is_csv: bool

    def source(self, column: str) -> str:
        return self.mapping.get(column, column)

    def where(self, row: int) -> str:
        return f"row {row} (line {row + 1})" if self.is_csv else f"row {row}"

    def column_label(self, column: str) -> str:
        source = self.source(column)
        return f"'{source}'" if source == column else f"'{source}' (mapped to {column})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_text(duck_type: str) -> bool:
    return duck_type.upper() in {"VARCHAR", "STRING", "TEXT"} or duck_type.upper() == "NULL"


def _is_numeric(duck_type: str) -> bool:
    upper = duck_type.upper()
    return upper in {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "FLOAT",
        "DOUBLE",
        "REAL",
        "BOOLEAN",
    } or upper.startswith("DECIMAL")


def normalized_expr(table: RawTable, spec: ColumnSpec) -> str:
    """The SQL that turns the raw column into its contract type (NULL where it cannot)."""
    source = table.source(spec.name)
    if source not in table.types:
        return (
            "CAST(NULL AS VARCHAR)"
            if spec.kind in ("id", "string")
            else ("CAST(NULL AS TIMESTAMP)" if spec.kind == "timestamp" else "CAST(NULL AS DOUBLE)")
        )
    col, duck_type = _quote(source), table.types[source]
    if spec.kind in ("id", "string"):
        return f"NULLIF(trim(CAST({col} AS VARCHAR)), '')"
    if spec.kind == "timestamp":
        if _is_text(duck_type):
            return f"CAST(TRY_CAST(NULLIF(trim({col}), '') AS TIMESTAMPTZ) AS TIMESTAMP)"
        if duck_type.upper().startswith(("TIMESTAMP", "DATE")):
            return f"CAST({col} AS TIMESTAMP)"
        raise DataError(
            f"{table.label}: column {table.column_label(spec.name)} has type {duck_type}; "
            f"expected {EXPECTED['timestamp']}"
        )
    if _is_text(duck_type):
        parsed = f"TRY_CAST(NULLIF(trim({col}), '') AS DOUBLE)"
    elif _is_numeric(duck_type):
        parsed = f"CAST({col} AS DOUBLE)"
    else:
        raise DataError(
            f"{table.label}: column {table.column_label(spec.name)} has type {duck_type}; "
            f"expected {EXPECTED['number']}"
        )
    return f"CASE WHEN isfinite({parsed}) THEN {parsed} END"


def _bad_predicate(table: RawTable, spec: ColumnSpec) -> str | None:
    source = table.source(spec.name)
    if source not in table.types:
        return None
    norm = normalized_expr(table, spec)
    if spec.required:
        return f"({norm}) IS NULL"
    if spec.kind in ("id", "string"):
        return None  # an empty optional text value is simply missing
    blank = f"NULLIF(trim(CAST({_quote(source)} AS VARCHAR)), '') IS NULL"
    return f"(NOT {blank} AND ({norm}) IS NULL)"


def _check_columns(table: RawTable) -> None:
    missing = [
        spec.name
        for spec in table.contract.columns
        if spec.required and table.source(spec.name) not in table.types
    ]
    if missing:
        found = ", ".join(c for c in table.types if c != "_row") or "none"
        names = ", ".join(f"'{table.source(m)}'" for m in missing)
        raise DataError(
            f"{table.label}: required column {names} missing (columns found: {found}); "
            f"map another column to it with --column {table.contract.name}.{missing[0]}=NAME"
        )


def _problem(table: RawTable, spec: ColumnSpec, count: int, rows: list[tuple[int, str]]) -> str:
    shown = ", ".join(f"{table.where(r)} {v!r}" for r, v in rows)
    what = "empty" if spec.kind == "id" else "not " + EXPECTED[spec.kind].split(" such as")[0]
    return (
        f"{table.label}: column {table.column_label(spec.name)}: {count} value(s) {what} "
        f"(expected {EXPECTED[spec.kind]}): {shown}"
        + (f" and {count - len(rows)} more" if count > len(rows) else "")
    )


def _duplicate_problem(con: duckdb.DuckDBPyConnection, table: RawTable) -> str | None:
    unique = table.contract.unique
    if unique is None or table.source(unique) not in table.types:
        return None
    key = normalized_expr(table, _spec(table.contract, unique))
    dupes = f"""
        SELECT _row, k, count(*) OVER (PARTITION BY k) AS n
        FROM (SELECT _row, {key} AS k FROM {table.relation}) WHERE k IS NOT NULL
    """
    (total,) = one_row(con, f"SELECT count(*) FROM ({dupes}) AS d WHERE n > 1")
    if not total:
        return None
    rows = con.execute(
        f"SELECT _row, k FROM ({dupes}) AS d WHERE n > 1 ORDER BY _row LIMIT {EXAMPLES_SHOWN}"
    ).fetchall()
    shown = ", ".join(f"{table.where(r)} {v!r}" for r, v in rows)
    more = f" and {total - len(rows)} more" if total > len(rows) else ""
    return (
        f"{table.label}: column {table.column_label(unique)}: {total} rows share a value "
        f"(expected each {unique} once): {shown}{more}"
    )


def _spec(contract: TableContract, name: str) -> ColumnSpec:
    return next(c for c in contract.columns if c.name == name)


def validate(con: duckdb.DuckDBPyConnection, table: RawTable) -> None:
    """Raise one DataError listing every broken rule of the table; return when it is clean."""
    _check_columns(table)
    checks = [
        (spec, pred)
        for spec in table.contract.columns
        if (pred := _bad_predicate(table, spec)) is not None
    ]
    problems: list[str] = []
    if checks:
        counts_sql = ", ".join(f"count(*) FILTER (WHERE {pred})" for _, pred in checks)
        counts = one_row(con, f"SELECT {counts_sql} FROM {table.relation}")
        for (spec, pred), count in zip(checks, counts, strict=True):
            if count:
                source = _quote(table.source(spec.name))
                rows = con.execute(
                    f"SELECT _row, coalesce(CAST({source} AS VARCHAR), '') FROM {table.relation} "
                    f"WHERE {pred} ORDER BY _row LIMIT {EXAMPLES_SHOWN}"
                ).fetchall()
                problems.append(_problem(table, spec, count, rows))
    duplicate = _duplicate_problem(con, table)
    if duplicate:
        problems.append(duplicate)
    if problems:
        raise DataError("; ".join(problems))


def normalized_select(table: RawTable, attributes: dict[str, str] | None = None) -> str:
    """SELECT of the contract columns in their types; ``attributes`` maps new name -> expr."""
    parts = [
        f"{normalized_expr(table, spec)} AS {_internal_name(spec.name)}"
        for spec in table.contract.columns
    ]
    parts += [f"{expr} AS {_quote(name)}" for name, expr in (attributes or {}).items()]
    return f"SELECT {', '.join(parts)} FROM {table.relation}"


def _internal_name(name: str) -> str:
    # 'timestamp' is a keyword in SQL dialects; inside clm it is 'ts'.
    return "ts" if name == "timestamp" else name
