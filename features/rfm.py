"""Recency, frequency, monetary and tenure features as of a cutoff.

The unit of frequency is the *purchase day* (a customer's orders on one calendar day), as in
the BTYD literature (Fader, Hardie & Lee 2005): ``repeat_purchase_days`` is BG/NBD's ``x``,
``days_between_first_and_last_purchase`` its ``t_x`` and ``days_since_first_purchase`` its
``T``, all in days. Spend per purchase day is the sum of that day's positive amounts; refunds
(negative amounts) are counted apart. Only rows with ``ts < as_of`` are read.
"""

from __future__ import annotations

from datetime import date

from clm.settings import FeatureSettings
from features.sql import FeatureQuery, date_literal

__all__ = ["rfm_query"]


def _window_columns(windows: list[int], as_of: date) -> list[tuple[str, str]]:
    columns = []
    for days in windows:
        inside = f"day >= {date_literal(as_of, days)}"
        columns.append((f"purchases_{days}d", f"count(CASE WHEN {inside} THEN 1 END)"))
        columns.append((f"spend_{days}d", f"sum(CASE WHEN {inside} THEN gross ELSE 0 END)"))
    return columns


def rfm_query(*, as_of: date, settings: FeatureSettings) -> FeatureQuery:
    """Per-customer RFM features before ``as_of`` (from the rollups of features.rollups)."""
    today = date_literal(as_of)
    windows = _window_columns(settings.purchase_windows_days, as_of)
    window_sql = "".join(f",\n        {expr} AS {name}" for name, expr in windows)
    window_names = [name for name, _ in windows]
    sql = f"""
WITH buyers AS (
    SELECT customer_id,
        count(*) AS purchase_days,
        date_diff('day', min(day), {today}) AS days_since_first_purchase,
        date_diff('day', max(day), {today}) AS days_since_last_purchase,
        date_diff('day', min(day), max(day)) AS days_between_first_and_last_purchase,
        sum(CASE WHEN day_number = 1 THEN gross END) AS first_purchase_spend,
        max_by(gross, day) AS last_purchase_spend,
        avg(gross) AS mean_purchase_spend,
        max(gross) AS max_purchase_spend,
        avg(gap_days) AS mean_days_between_purchases,
        stddev_samp(gap_days) AS gap_stddev,
        sum(orders) AS orders,
        sum(gross) AS total_spend{window_sql}
    FROM purchase_days
    WHERE day < {today}
    GROUP BY customer_id
),
refunds AS (
    SELECT customer_id, sum(refunds) AS refund_count, sum(refunded) AS refunded_amount
    FROM refund_days
    WHERE day < {today}
    GROUP BY customer_id
)
SELECT coalesce(b.customer_id, r.customer_id) AS customer_id,
    coalesce(b.purchase_days, 0) AS purchase_days,
    greatest(coalesce(b.purchase_days, 0) - 1, 0) AS repeat_purchase_days,
    coalesce(b.orders, 0) AS orders,
    b.days_since_first_purchase,
    b.days_since_last_purchase,
    b.days_between_first_and_last_purchase,
    b.first_purchase_spend,
    b.last_purchase_spend,
    b.mean_purchase_spend,
    b.max_purchase_spend,
    coalesce(b.total_spend, 0) AS total_spend,
    coalesce(b.total_spend, 0) - coalesce(r.refunded_amount, 0) AS net_spend,
    {", ".join(f"b.{name}" for name in window_names)},
    b.mean_days_between_purchases,
    b.gap_stddev / NULLIF(b.mean_days_between_purchases, 0) AS days_between_purchases_cv,
    coalesce(r.refund_count, 0) AS refund_count,
    r.refunded_amount / NULLIF(b.total_spend, 0) AS refund_share_of_spend
FROM buyers b
FULL OUTER JOIN refunds r ON r.customer_id = b.customer_id
"""
    columns = (
        "purchase_days",
        "repeat_purchase_days",
        "orders",
        "days_since_first_purchase",
        "days_since_last_purchase",
        "days_between_first_and_last_purchase",
        "first_purchase_spend",
        "last_purchase_spend",
        "mean_purchase_spend",
        "max_purchase_spend",
        "total_spend",
        "net_spend",
        *window_names,
        "mean_days_between_purchases",
        "days_between_purchases_cv",
        "refund_count",
        "refund_share_of_spend",
    )
    zero_fill = {"purchase_days", "repeat_purchase_days", "orders", "total_spend", "net_spend"}
    zero_fill |= {"refund_count", *window_names}
    return FeatureQuery("rfm", sql, columns, frozenset(zero_fill))
