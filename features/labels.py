"""Targets from the window after a cutoff: ``[as_of, as_of + horizon)``.

* ``churned``: 1 when the customer has no purchase day in the window, or cancels explicitly
  (a cancel event in the window after their last purchase in it); else 0.
* ``purchases``: purchase days in the window (the BTYD unit of frequency).
* ``days_to_purchase``: days from the cutoff to the first purchase day in the window (empty
  when there is none); it gives the churn label of any shorter horizon.
* ``spend``: the sum of amounts in the window, refunds included (net revenue).
* ``next_stage``: the stage at ``as_of + horizon`` by the rules of :mod:`features.stages`.
"""

from __future__ import annotations

from datetime import date, timedelta

from clm.settings import StageSettings
from features.sql import FeatureQuery, as_of_datetime, date_literal, text_list, ts_literal
from features.stages import stage_query

__all__ = ["label_query"]


def label_query(*, as_of: date, horizon_days: int, settings: StageSettings) -> FeatureQuery:
    """``customer_id, churned, purchases, days_to_purchase, spend, next_stage`` per customer."""
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}")
    end = as_of_datetime(as_of) + timedelta(days=horizon_days)
    start_sql, end_sql = ts_literal(as_of), ts_literal(end)
    next_stage = stage_query(as_of=end, settings=settings).sql
    sql = f"""
WITH window_tx AS (
    SELECT customer_id,
        count(CASE WHEN refund = 0 THEN 1 END) AS purchases,
        sum(amount) AS spend,
        max(last_order_ts) AS last_purchase_ts,
        min(purchase_day) AS first_purchase_day
    FROM (
        SELECT customer_id, gross AS amount, 0 AS refund, last_order_ts, day AS purchase_day
        FROM purchase_days
        WHERE day >= {date_literal(as_of)} AND day < {date_literal(end)}
        UNION ALL
        SELECT customer_id, -refunded AS amount, 1 AS refund,
            CAST(NULL AS TIMESTAMP) AS last_order_ts, CAST(NULL AS DATE) AS purchase_day
        FROM refund_days
        WHERE day >= {date_literal(as_of)} AND day < {date_literal(end)}
    ) AS w
    GROUP BY customer_id
),
window_cancel AS (
    SELECT customer_id, max(ts) AS last_cancel_ts
    FROM events
    WHERE ts >= {start_sql} AND ts < {end_sql}
        AND event_type IN {text_list(settings.cancel_event_types)}
    GROUP BY customer_id
)
SELECT n.customer_id,
    CASE WHEN coalesce(w.purchases, 0) = 0 OR c.last_cancel_ts > w.last_purchase_ts
        THEN 1 ELSE 0 END AS churned,
    coalesce(w.purchases, 0) AS purchases,
    date_diff('day', {date_literal(as_of)}, w.first_purchase_day) AS days_to_purchase,
    coalesce(w.spend, 0.0) AS spend,
    n.stage AS next_stage
FROM ({next_stage}) AS n
LEFT JOIN window_tx w ON w.customer_id = n.customer_id
LEFT JOIN window_cancel c ON c.customer_id = n.customer_id
"""
    columns = ("churned", "purchases", "days_to_purchase", "spend", "next_stage")
    return FeatureQuery("labels", sql, columns, frozenset())
