"""Helpers for feature SQL written once, in DuckDB's dialect, and portable to Spark SQL.

Rules that keep a query portable: time boundaries are literals computed in Python; day
arithmetic is ``date_diff('day', a, b)``; divisions go through ``NULLIF`` (Spark's ANSI mode
fails on division by zero); aggregates are plain (``CASE`` inside, no ``FILTER``).
:func:`to_spark` transpiles with sqlglot and fails loudly on anything it cannot carry over.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

__all__ = [
    "FeatureQuery",
    "as_of_datetime",
    "date_literal",
    "events_per_customer",
    "identifier",
    "one_row",
    "quote_text",
    "text_list",
    "to_spark",
    "ts_literal",
]


@dataclass(frozen=True)
class FeatureQuery:
    """A per-customer SELECT (``customer_id`` + ``columns``); how to fill customers it lacks."""

    name: str
    sql: str
    columns: tuple[str, ...]
    zero_fill: frozenset[str]  # counts and sums: 0 for a customer with no rows; others stay NULL


def as_of_datetime(as_of: date) -> datetime:
    """Cutoffs are whole days (midnight UTC); a datetime with a time of day is refused."""
    if isinstance(as_of, datetime):
        if as_of.time() != datetime.min.time() or as_of.tzinfo is not None:
            raise ValueError(f"as_of must be a date (YYYY-MM-DD), got {as_of.isoformat()}")
        return as_of
    return datetime(as_of.year, as_of.month, as_of.day)


def ts_literal(as_of: date, minus_days: int = 0) -> str:
    moment = as_of_datetime(as_of) - timedelta(days=minus_days)
    return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}'"


def date_literal(as_of: date, minus_days: int = 0) -> str:
    return f"DATE '{(as_of_datetime(as_of) - timedelta(days=minus_days)):%Y-%m-%d}'"


def events_per_customer(columns: list[str], as_of: date) -> str:
    """One row per customer of the aggregates ``columns`` over the events before ``as_of``."""
    body = ",\n        ".join(columns)
    return (
        f"SELECT customer_id,\n        {body}\n    FROM events\n"
        f"    WHERE ts < {ts_literal(as_of)}\n    GROUP BY customer_id"
    )


def quote_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def text_list(values: list[str] | tuple[str, ...]) -> str:
    """An SQL ``IN`` list; an empty list becomes one that matches nothing."""
    return "(" + ", ".join(quote_text(v) for v in values) + ")" if values else "(NULL)"


def identifier(text: str) -> str:
    """A column-name fragment from free text: ``'Add to cart!'`` -> ``add_to_cart``; letters
    with accents lose them (``'Über-Event'`` -> ``uber_event``, not ``ber_event``)."""
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)
    )
    name = re.sub(r"[^0-9a-z]+", "_", plain.lower()).strip("_")
    return name if name and not name[0].isdigit() else f"t_{name}"


def to_spark(sql: str) -> str:
    """The same query in Spark SQL; raises when sqlglot cannot carry a construct over.
    ``AS MATERIALIZED`` (a DuckDB hint: compute a CTE used twice once) has no Spark form."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for cte in tree.find_all(exp.CTE):
        cte.set("materialized", None)
    return tree.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)


def one_row(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    """The single row of an aggregate query (fetched whole, so the connection is free after)."""
    rows = con.execute(sql).fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"expected one row, got {len(rows)} from: {sql[:200]}")
    return tuple(rows[0])
