"""The lifecycle stage of every customer known before a cutoff, by configurable rules.

Rules at ``as_of`` (first match wins; see ARCHITECTURE.md), with S = ``StageSettings``:

* **churned**: bought before, and no purchase day in the last ``S.churn_inactivity_days``
  days, or a cancel event after the last purchase;
* **advocacy**: two or more purchase days and an advocacy signal (a referral or review event,
  or an NPS answer >= ``S.promoter_min_score``) in the last ``S.advocacy_lookback_days`` days;
* **retention**: two or more purchase days;
* **purchase**: exactly one purchase day;
* **consideration**: a lead signal (signup, subscribe, cart, contact; or a ``signup_date``);
* **awareness**: known (any event) and nothing above.

A customer is *known* at ``as_of`` with a transaction or event before it, or a ``signup_date``
before it. ``days_in_stage`` counts days since the customer entered the stage: the first event
(awareness), first lead signal (consideration), the purchase (purchase), the later of the
second purchase day, a return (the first purchase after a lapse longer than the churn window
or after a cancel) or the end of an advocacy signal's lookback (retention), the later of
entering retention and the start of the unbroken run of advocacy signals (each within the
lookback of the one before) that is still in effect (advocacy), the earlier of the first cancel
after the last purchase and the day inactivity passed the churn window (churned).
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from clm.settings import StageSettings
from features.rollups import ensure_rollups
from features.sql import FeatureQuery, date_literal, events_per_customer, text_list, ts_literal

__all__ = ["PROSPECT_STAGES", "STAGES", "signal_columns", "stage_query", "stages_at"]

STAGES = ("awareness", "consideration", "purchase", "retention", "advocacy", "churned")
# The stages before a first purchase: a prospect cannot stop buying, so it has no churn risk.
PROSPECT_STAGES = ("awareness", "consideration")


def signal_columns(s: StageSettings) -> list[str]:
    """Per customer over the events before the cutoff: the first event and lead signal."""
    lead = text_list(s.lead_event_types)
    return [
        "min(ts) AS first_ts",
        f"min(CASE WHEN event_type IN {lead} THEN ts END) AS first_lead_ts",
    ]


def _facts_sql(as_of: date, s: StageSettings, signals_from: str | None) -> str:
    cutoff, today = ts_literal(as_of), date_literal(as_of)
    signals = (
        f"SELECT customer_id, first_ts, first_lead_ts FROM {signals_from}"
        if signals_from is not None
        else events_per_customer(signal_columns(s), as_of)
    )
    promoter = f"event_type IN {text_list(s.nps_event_types)} AND value >= {s.promoter_min_score}"
    advocacy = f"(event_type IN {text_list(s.advocacy_event_types)} OR ({promoter}))"
    lookback = ts_literal(as_of, s.advocacy_lookback_days)
    cancel = text_list(s.cancel_event_types)
    return f"""
buys AS (
    SELECT customer_id, count(*) AS purchase_days, max(last_order_ts) AS last_purchase_ts,
        max(day) AS last_day,
        min(CASE WHEN day_number = 2 THEN day END) AS second_day,
        max(CASE WHEN gap_days > {s.churn_inactivity_days} THEN day END) AS return_day
    FROM purchase_days
    WHERE day < {today}
    GROUP BY customer_id
),
first_tx AS (
    SELECT customer_id, CAST(min(day) AS TIMESTAMP) AS first_ts
    FROM (
        SELECT customer_id, day FROM purchase_days WHERE day < {today}
        UNION ALL
        SELECT customer_id, day FROM refund_days WHERE day < {today}
    ) AS d
    GROUP BY customer_id
),
signals AS (
    {signals}
),
cancels AS (
    SELECT c.customer_id, max(c.ts) AS last_cancel_ts,
        min(CASE WHEN c.ts > b.last_purchase_ts THEN c.ts END) AS cancel_ts
    FROM events c
    JOIN buys b ON b.customer_id = c.customer_id
    WHERE c.ts < {cutoff} AND c.event_type IN {cancel}
    GROUP BY c.customer_id
),
return_after_cancel AS (
    SELECT p.customer_id, min(p.day) AS return_day
    FROM purchase_days p
    JOIN cancels c ON c.customer_id = p.customer_id
    WHERE c.cancel_ts IS NULL AND p.day < {today} AND p.last_order_ts > c.last_cancel_ts
    GROUP BY p.customer_id
),
advocacy_signals AS (
    SELECT customer_id, ts,
        date_diff('day', CAST(lag(ts) OVER (PARTITION BY customer_id ORDER BY ts) AS DATE),
            CAST(ts AS DATE)) AS gap_days
    FROM events
    WHERE ts < {cutoff} AND {advocacy}
),
advocacy AS (
    SELECT customer_id,
        max(CASE WHEN gap_days IS NULL OR gap_days > {s.advocacy_lookback_days} THEN ts END)
            AS run_start_ts,
        max(ts) AS last_advocacy_ts
    FROM advocacy_signals
    GROUP BY customer_id
),
signups AS (
    SELECT customer_id, min(signup_date) AS signup_ts FROM customers
    WHERE signup_date < {cutoff} GROUP BY customer_id
),
known AS (
    SELECT customer_id FROM first_tx
    UNION SELECT customer_id FROM signals
    UNION SELECT customer_id FROM signups
),
facts AS (
    SELECT k.customer_id,
        coalesce(b.purchase_days, 0) AS purchase_days,
        b.last_purchase_ts, b.last_day, b.second_day,
        greatest(b.return_day, r.return_day) AS return_day,
        least(t.first_ts, g.first_ts, u.signup_ts) AS first_seen_ts,
        least(g.first_lead_ts, u.signup_ts) AS first_lead_ts,
        c.cancel_ts,
        CASE WHEN a.last_advocacy_ts >= {lookback} THEN a.run_start_ts END AS advocacy_since_ts,
        a.last_advocacy_ts
    FROM known k
    LEFT JOIN buys b ON b.customer_id = k.customer_id
    LEFT JOIN first_tx t ON t.customer_id = k.customer_id
    LEFT JOIN signals g ON g.customer_id = k.customer_id
    LEFT JOIN signups u ON u.customer_id = k.customer_id
    LEFT JOIN cancels c ON c.customer_id = k.customer_id
    LEFT JOIN return_after_cancel r ON r.customer_id = k.customer_id
    LEFT JOIN advocacy a ON a.customer_id = k.customer_id
)"""


def _days_since(column: str, as_of: date) -> str:
    return f"date_diff('day', CAST({column} AS DATE), {date_literal(as_of)})"


def _stage_sql(as_of: date, s: StageSettings) -> tuple[str, str]:
    """The stage rule and the days-in-stage rule, as SQL over ``facts``."""
    churn = s.churn_inactivity_days
    lookback = s.advocacy_lookback_days
    idle = _days_since("last_day", as_of)
    cancelled = "cancel_ts IS NOT NULL"  # a cancel after the last purchase
    advocate = "advocacy_since_ts IS NOT NULL"
    stage = f"""CASE
        WHEN purchase_days > 0 AND ({idle} > {churn} OR {cancelled}) THEN 'churned'
        WHEN purchase_days >= 2 AND {advocate} THEN 'advocacy'
        WHEN purchase_days >= 2 THEN 'retention'
        WHEN purchase_days = 1 THEN 'purchase'
        WHEN first_lead_ts IS NOT NULL THEN 'consideration'
        ELSE 'awareness'
    END"""
    since_second = _days_since("second_day", as_of)
    since_return = _days_since("return_day", as_of)
    since_advocacy_end = (
        f"CASE WHEN {_days_since('last_advocacy_ts', as_of)} > {lookback} "
        f"THEN {_days_since('last_advocacy_ts', as_of)} - {lookback + 1} END"
    )
    days = f"""CASE
        WHEN purchase_days > 0 AND ({idle} > {churn} OR {cancelled}) THEN greatest(
            CASE WHEN {idle} > {churn} THEN {idle} - {churn + 1} END,
            CASE WHEN {cancelled} THEN {_days_since("cancel_ts", as_of)} END)
        WHEN purchase_days >= 2 AND {advocate} THEN least(
            {since_second}, {since_return}, {_days_since("advocacy_since_ts", as_of)})
        WHEN purchase_days >= 2 THEN least({since_second}, {since_return}, {since_advocacy_end})
        WHEN purchase_days = 1 THEN {idle}
        WHEN first_lead_ts IS NOT NULL THEN {_days_since("first_lead_ts", as_of)}
        ELSE {_days_since("first_seen_ts", as_of)}
    END"""
    return stage, days


def stage_query(
    *, as_of: date, settings: StageSettings, signals_from: str | None = None
) -> FeatureQuery:
    """``customer_id, stage, days_in_stage`` for every customer known before ``as_of``.

    ``signals_from``: a relation that already holds :func:`signal_columns` per customer (the
    snapshot's shared pass over events); by default the query makes its own."""
    stage, days = _stage_sql(as_of, settings)
    sql = f"""
WITH {_facts_sql(as_of, settings, signals_from)}
SELECT customer_id, {stage} AS stage, {days} AS days_in_stage
FROM facts
"""
    return FeatureQuery("stage", sql, ("stage", "days_in_stage"), frozenset())


def stages_at(
    con: duckdb.DuckDBPyConnection, *, as_of: date, settings: StageSettings
) -> pd.DataFrame:
    """The stage of every known customer at ``as_of``, sorted by customer_id."""
    ensure_rollups(con)
    query = stage_query(as_of=as_of, settings=settings)
    return con.sql(f"SELECT * FROM ({query.sql}) AS s ORDER BY customer_id").df()
