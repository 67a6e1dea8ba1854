"""The only module that reads raw data: CSV or Parquet files in a folder, or a DuckDB database.

:func:`load` reads ``transactions`` (required), ``events`` and ``customers`` (optional), renames
columns by the mapping, validates them against the contract and leaves them, typed, as DuckDB
tables ``transactions(customer_id, ts, amount, order_id, channel)``,
``events(customer_id, ts, event_type, value, channel)`` and
``customers(customer_id, signup_date, attr_*)`` in an in-memory connection. Timestamps are
naive UTC (a naive input is taken as UTC; an input with an offset is converted).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from clm.errors import DataError
from features.contract import (
    CONTRACTS,
    RawTable,
    TableContract,
    check_columns,
    clean_text,
    raw_copies,
    typed_select,
    validate,
)
from features.sql import one_row

__all__ = ["Dataset", "attribute_name", "find_table_files", "load"]

SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
EMPTY_TABLES = {
    "events": "customer_id VARCHAR, ts TIMESTAMP, event_type VARCHAR, value DOUBLE, "
    "channel VARCHAR",
    "customers": "customer_id VARCHAR, signup_date TIMESTAMP",
}


@dataclass
class Dataset:
    """Validated, typed tables in a DuckDB connection, and what was found."""

    con: duckdb.DuckDBPyConnection
    sources: dict[str, str]  # table -> label of the file / table it came from
    attributes: dict[str, str] = field(default_factory=dict)  # attr column -> 'numeric'|'category'
    row_counts: dict[str, int] = field(default_factory=dict)

    def has(self, table: str) -> bool:
        return table in self.sources

    def date_range(self) -> tuple[datetime | None, datetime | None]:
        """The first and last timestamp over transactions and events."""
        first, last = one_row(
            self.con,
            "SELECT min(ts), max(ts) FROM (SELECT ts FROM transactions UNION ALL "
            "SELECT ts FROM events) AS t",
        )
        return first, last


def attribute_name(column: str) -> str:
    """A customer attribute's feature name: ``attr_`` + the column in snake case."""
    return "attr_" + (re.sub(r"[^0-9a-zA-Z]+", "_", column).strip("_").lower() or "unnamed")


def find_table_files(folder: Path) -> dict[str, Path]:
    """The file of each contract table in ``folder`` (``transactions.csv``, ...)."""
    found: dict[str, Path] = {}
    for table in CONTRACTS:
        matches = [folder / f"{table}{suffix}" for suffix in SUFFIXES]
        present = [m for m in matches if m.is_file()]
        if len(present) > 1:
            names = ", ".join(p.name for p in present)
            raise DataError(f"{folder}: more than one file for table {table} ({names}); keep one")
        if present:
            found[table] = present[0]
    return found


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise DataError(f"{path.name}: the file is empty (expected a header row)")
    return header


def _register_csv(con: duckdb.DuckDBPyConnection, path: Path, view: str) -> None:
    header = _csv_header(path)
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding="utf8"),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(f"{path.name}: not a readable CSV file ({exc})") from exc
    table = table.append_column("_row", pa.array(range(1, table.num_rows + 1), pa.int64()))
    con.register(f"{view}_arrow", table)
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {view}_arrow")


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


def _mapping_for(table: str, columns: dict[str, dict[str, str]]) -> dict[str, str]:
    mapping = {**columns.get("*", {}), **columns.get(table, {})}
    contract = CONTRACTS[table]
    for target in columns.get(table, {}):
        if target not in contract.column_names:
            raise DataError(
                f"column mapping for {table}: '{target}' is not a contract column "
                f"(expected one of {', '.join(contract.column_names)})"
            )
    # A '*' entry only applies to tables whose contract has that column.
    return {k: v for k, v in mapping.items() if k in contract.column_names}


def _attribute_exprs(con: duckdb.DuckDBPyConnection, raw: RawTable) -> dict[str, tuple[str, str]]:
    """Customer attributes: numeric when every non-empty value is a number, else a category."""
    used = {raw.source(c) for c in raw.contract.column_names} | {"_row"}
    out: dict[str, tuple[str, str]] = {}
    for column, duck_type in raw.types.items():
        if column in used:
            continue
        name = attribute_name(column)
        if name in out:
            raise DataError(f"{raw.label}: columns {column!r} and another both become {name}")
        quoted = '"' + column.replace('"', '""') + '"'
        text = clean_text(quoted)
        (non_numeric,) = one_row(
            con,
            f"SELECT count(*) FROM {raw.relation} WHERE {text} IS NOT NULL "
            f"AND TRY_CAST({text} AS DOUBLE) IS NULL",
        )
        if non_numeric == 0 and duck_type.upper() not in {"DATE", "TIMESTAMP"}:
            out[name] = (f"TRY_CAST({text} AS DOUBLE)", "numeric")
        else:
            out[name] = (text, "category")
    return out


def _register(con: duckdb.DuckDBPyConnection, location: Path, table: str) -> tuple[str, bool]:
    """Register the raw table as view ``raw_<table>``; return its label and whether CSV."""
    view = f"raw_{table}"
    if location.is_dir():
        path = find_table_files(location).get(table)
        if path is None:
            return "", False
        if path.name.endswith((".csv", ".csv.gz")):
            _register_csv(con, path, view)
            return path.name, True
        _register_parquet(con, path, view)
        return path.name, False
    con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT *, rowid + 1 AS _row FROM src.{table}")
    return f"{location.name}:{table}", False


def _database_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src'"
    ).fetchall()
    return {r[0] for r in rows}


def load(location: Path, *, columns: dict[str, dict[str, str]] | None = None) -> Dataset:
    """Read, validate and type the raw tables at ``location`` (a folder or a .duckdb file)."""
    location = Path(location)
    if not location.exists():
        raise DataError(f"{location}: no such folder or DuckDB database")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # In Jupyter without ipywidgets DuckDB refuses the setting, and shows no bar anyway.
    with contextlib.suppress(duckdb.InvalidInputException):
        con.execute("SET enable_progress_bar = false")
    available: set[str] | None = None
    if location.is_file():
        literal = str(location).replace("'", "''")
        try:
            con.execute(f"ATTACH '{literal}' AS src (READ_ONLY)")
        except duckdb.Error as exc:
            raise DataError(f"{location}: not a DuckDB database ({exc})") from exc
        available = _database_tables(con)
    dataset = Dataset(con=con, sources={})
    for name, contract in CONTRACTS.items():
        if available is not None and name not in available:
            label = ""
        else:
            label, is_csv = _register(con, location, name)
        if not label:
            if contract.required:
                raise DataError(
                    f"{location}: no {name} table (expected {name}.csv or {name}.parquet)"
                )
            con.execute(f"CREATE TABLE {name} ({EMPTY_TABLES[name]})")
            continue
        _load_table(dataset, contract, label, is_csv, columns or {})
    return dataset


def _load_table(
    dataset: Dataset,
    contract: TableContract,
    label: str,
    is_csv: bool,
    columns: dict[str, dict[str, str]],
) -> None:
    con = dataset.con
    view = f"raw_{contract.name}"
    raw = RawTable(
        contract=contract,
        label=label,
        relation=view,
        mapping=_mapping_for(contract.name, columns),
        types=_column_types(con, view),
        is_csv=is_csv,
    )
    check_columns(raw)
    attributes: dict[str, str] = {}
    if contract.keeps_other_columns:
        found = _attribute_exprs(con, raw)
        attributes = {name: expr for name, (expr, _) in found.items()}
        dataset.attributes = {name: kind for name, (_, kind) in found.items()}
    # One read of the source into a typed table; the checks then run in memory.
    con.execute(f"CREATE TABLE {contract.name} AS {typed_select(raw, attributes)}")
    validate(con, raw, contract.name)
    for helper in raw_copies(raw):
        con.execute(f"ALTER TABLE {contract.name} DROP COLUMN {helper}")
    (count,) = one_row(con, f"SELECT count(*) FROM {contract.name}")
    dataset.row_counts[contract.name] = int(count)
    dataset.sources[contract.name] = label
