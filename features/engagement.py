"""Engagement features as of a cutoff: event counts and trends, recency, channels, voice.

Counts per event type in the last N days (``session_events_30d``), the trend of each (the
daily rate in the last ``trend_recent_days`` against the ``trend_prior_days`` before, as
``(recent - prior) / (recent + prior)`` in [-1, 1], 0 when both are empty), days since the last
event, distinct active days, the number of channels used over events and transactions
(omnichannel), support tickets, referrals and reviews, the last and mean NPS answer, and email
open and click rates (per email sent). Only rows with ``ts < as_of`` are read.
"""

from __future__ import annotations

from datetime import date

from clm.settings import FeatureSettings, StageSettings
from features.sql import FeatureQuery, date_literal, identifier, text_list, ts_literal

__all__ = ["engagement_query", "event_type_columns"]


def event_type_columns(event_types: list[str]) -> dict[str, str]:
    """Event type -> its column-name fragment; refuses two types that collide."""
    names: dict[str, str] = {}
    for event_type in event_types:
        name = identifier(event_type)
        clash = next((t for t, n in names.items() if n == name), None)
        if clash is not None:
            raise ValueError(f"event types {clash!r} and {event_type!r} both become '{name}'")
        names[event_type] = name
    return names


def _trend(recent: str, prior: str, recent_days: int, prior_days: int) -> str:
    r, p = f"({recent}) / {float(recent_days)}", f"({prior}) / {float(prior_days)}"
    return f"CASE WHEN {r} + {p} = 0 THEN 0.0 ELSE ({r} - {p}) / NULLIF({r} + {p}, 0) END"


def _type_windows(f: FeatureSettings, as_of: date) -> list[tuple[str, str]]:
    """Per (customer, event type): counts in each window and in the two trend periods."""
    recent, prior = f.trend_recent_days, f.trend_prior_days
    spans = [(f"n_{w}", w, 0) for w in f.event_windows_days]
    spans += [("n_recent", recent, 0), ("n_prior", recent + prior, recent)]
    spans += [("n_email_window", f.email_rate_window_days, 0)]
    return [
        (
            name,
            f"sum(CASE WHEN ts >= {ts_literal(as_of, start)} AND ts < {ts_literal(as_of, end)} "
            "THEN 1 ELSE 0 END)",
        )
        for name, start, end in spans
    ]


def _pivot(f: FeatureSettings, types: dict[str, str]) -> list[str]:
    def count_of(column: str, event_types: list[str] | None = None) -> str:
        if event_types is None:
            return f"sum({column})"
        return f"sum(CASE WHEN event_type IN {text_list(event_types)} THEN {column} ELSE 0 END)"

    parts = []
    for event_type, name in types.items():
        for w in f.event_windows_days:
            parts.append(f"{count_of(f'n_{w}', [event_type])} AS {name}_events_{w}d")
        parts.append(f"{count_of('n_recent', [event_type])} AS {name}_recent")
        parts.append(f"{count_of('n_prior', [event_type])} AS {name}_prior")
    for w in f.event_windows_days:
        parts.append(f"{count_of(f'n_{w}')} AS events_{w}d")
    parts += [
        f"{count_of('n_recent')} AS all_recent",
        f"{count_of('n_prior')} AS all_prior",
        "max(last_ts) AS last_event_ts",
        f"{count_of('n', f.support_event_types)} AS support_tickets",
        f"{count_of('n', f.referral_event_types)} AS referrals",
        f"{count_of('n', f.review_event_types)} AS reviews",
        f"{count_of('n_email_window', [f.email_sent_event_type])} AS emails_sent",
        f"{count_of('n_email_window', [f.email_open_event_type])} AS emails_opened",
        f"{count_of('n_email_window', [f.email_click_event_type])} AS emails_clicked",
    ]
    return parts


def engagement_query(
    *, as_of: date, settings: FeatureSettings, stages: StageSettings, event_types: list[str]
) -> FeatureQuery:
    """Per-customer engagement features from ``events`` (and channels of ``transactions``)."""
    f = settings
    cutoff, today = ts_literal(as_of), date_literal(as_of)
    types = event_type_columns(event_types)
    longest = max(f.event_windows_days)
    rate_window = f.email_rate_window_days
    recent, prior = f.trend_recent_days, f.trend_prior_days
    trend_suffix = f"trend_{recent}d_vs_prior_{prior}d"
    type_windows = ",\n        ".join(f"{expr} AS {name}" for name, expr in _type_windows(f, as_of))
    pivot = ",\n        ".join(_pivot(f, types))
    per_type = []
    for name in types.values():
        per_type += [f"p.{name}_events_{w}d" for w in f.event_windows_days]
        per_type.append(
            _trend(f"p.{name}_recent", f"p.{name}_prior", recent, prior)
            + f" AS {name}_{trend_suffix}"
        )
    totals = [f"p.events_{w}d" for w in f.event_windows_days]
    totals.append(
        _trend("p.all_recent", "p.all_prior", recent, prior) + f" AS events_{trend_suffix}"
    )
    nps_types = text_list(stages.nps_event_types)
    sql = f"""
WITH ev AS (
    SELECT customer_id, ts, event_type, value FROM events WHERE ts < {cutoff}
),
by_type AS (
    SELECT customer_id, event_type, count(*) AS n, max(ts) AS last_ts,
        {type_windows}
    FROM ev
    GROUP BY customer_id, event_type
),
pivoted AS (
    SELECT customer_id,
        {pivot}
    FROM by_type
    GROUP BY customer_id
),
active AS (
    SELECT customer_id, count(*) AS active_days,
        sum(CASE WHEN day >= {date_literal(as_of, longest)} THEN 1 ELSE 0 END)
            AS active_days_{longest}d
    FROM (SELECT DISTINCT customer_id, CAST(ts AS DATE) AS day FROM ev) AS d
    GROUP BY customer_id
),
nps AS (
    SELECT customer_id, max_by(value, ts) AS last_nps, avg(value) AS mean_nps,
        count(*) AS nps_responses
    FROM ev
    WHERE event_type IN {nps_types} AND value IS NOT NULL
    GROUP BY customer_id
),
channels AS (
    SELECT customer_id, count(DISTINCT channel) AS channel_count
    FROM (
        SELECT customer_id, channel FROM events WHERE ts < {cutoff} AND channel IS NOT NULL
        UNION ALL
        SELECT customer_id, channel FROM transactions WHERE ts < {cutoff} AND channel IS NOT NULL
    ) AS c
    GROUP BY customer_id
)
SELECT coalesce(p.customer_id, c.customer_id) AS customer_id,
    {", ".join(per_type + totals)},
    date_diff('day', CAST(p.last_event_ts AS DATE), {today}) AS days_since_last_event,
    a.active_days,
    a.active_days_{longest}d,
    c.channel_count,
    p.support_tickets,
    p.referrals,
    p.reviews,
    n.last_nps,
    n.mean_nps,
    n.nps_responses,
    CAST(p.emails_opened AS DOUBLE) / NULLIF(p.emails_sent, 0) AS email_open_rate_{rate_window}d,
    CAST(p.emails_clicked AS DOUBLE) / NULLIF(p.emails_sent, 0) AS email_click_rate_{rate_window}d
FROM pivoted p
LEFT JOIN active a ON a.customer_id = p.customer_id
LEFT JOIN nps n ON n.customer_id = p.customer_id
FULL OUTER JOIN channels c ON c.customer_id = p.customer_id
"""
    columns = [
        *[col.split(" AS ")[-1].removeprefix("p.") for col in per_type + totals],
        "days_since_last_event",
        "active_days",
        f"active_days_{longest}d",
        "channel_count",
        "support_tickets",
        "referrals",
        "reviews",
        "last_nps",
        "mean_nps",
        "nps_responses",
        f"email_open_rate_{rate_window}d",
        f"email_click_rate_{rate_window}d",
    ]
    nullable = {
        "days_since_last_event",
        "last_nps",
        "mean_nps",
        f"email_open_rate_{rate_window}d",
        f"email_click_rate_{rate_window}d",
    }
    return FeatureQuery("engagement", sql, tuple(columns), frozenset(set(columns) - nullable))
