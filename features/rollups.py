"""Daily rollups of transactions, computed once per dataset and shared by every cutoff.

A cutoff is a whole day, so a day-level row is either entirely before it or not: features
filter the rollups with ``day < as_of`` and stay point-in-time correct. The gap to the
previous purchase day never looks forward, so it is the same at every cutoff after the day.
"""

from __future__ import annotations

import duckdb

__all__ = ["ROLLUPS", "ensure_rollups"]

ROLLUPS: dict[str, str] = {
    # One row per purchase day (positive amounts), with the gap to the previous purchase day.
    "purchase_days": """
SELECT customer_id, day, gross, orders, last_order_ts,
    date_diff('day', lag(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap_days,
    row_number() OVER (PARTITION BY customer_id ORDER BY day) AS day_number
FROM (
    SELECT customer_id, CAST(ts AS DATE) AS day, sum(amount) AS gross, count(*) AS orders,
        max(ts) AS last_order_ts
    FROM transactions
    WHERE amount > 0
    GROUP BY customer_id, CAST(ts AS DATE)
) AS d
""",
    # Refunds (negative amounts) per customer and day.
    "refund_days": """
SELECT customer_id, CAST(ts AS DATE) AS day, sum(-amount) AS refunded, count(*) AS refunds
FROM transactions
WHERE amount < 0
GROUP BY customer_id, CAST(ts AS DATE)
""",
}


def ensure_rollups(con: duckdb.DuckDBPyConnection) -> None:
    """Create the rollup tables from ``transactions`` unless they exist."""
    existing = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    for name, sql in ROLLUPS.items():
        if name not in existing:
            con.execute(f"CREATE TABLE {name} AS {sql}")
