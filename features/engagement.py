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
from typing import NamedTuple

from clm.settings import FeatureSettings, StageSettings
from features.sql import (
    FeatureQuery,
    date_literal,
    events_per_customer,
    identifier,
    quote_text,
    text_list,
    ts_literal,
)

__all__ = [
    "engagement_query",
    "event_type_columns",
    "first_collision",
    "history_columns",
    "per_type_suffixes",
]


def first_collision(event_types: list[str]) -> tuple[str, str, str] | None:
    """The first two event types that would name the same columns ('NPS' and 'nps'), and
    that name; None when every type has columns of its own."""
    seen: dict[str, str] = {}
    for event_type in event_types:
        name = identifier(event_type)
        clash = seen.setdefault(name, event_type)
        if clash != event_type:
            return clash, event_type, name
    return None


def event_type_columns(event_types: list[str]) -> dict[str, str]:
    """Event type -> its column-name fragment; refuses two types that collide."""
    if (collision := first_collision(event_types)) is not None:
        clash, event_type, name = collision
        raise ValueError(f"event types {clash!r} and {event_type!r} both become '{name}'")
    return {event_type: identifier(event_type) for event_type in event_types}


def per_type_suffixes(f: FeatureSettings) -> list[str]:
    """What follows ``<event type>_`` in the names of the columns each event type gets (all
    counts or trends of counts: 0 for a customer without such events)."""
    trend = f"trend_{f.trend_recent_days}d_vs_prior_{f.trend_prior_days}d"
    return [*(f"events_{w}d" for w in f.event_windows_days), trend]


def _trend(recent: str, prior: str, recent_days: int, prior_days: int) -> str:
    # In double precision on both engines: Spark would divide by a decimal literal exactly
    # (as DECIMAL), giving 0.33332 where DuckDB gives 0.3333333333333333.
    r = f"CAST(({recent}) AS DOUBLE) / {recent_days}"
    p = f"CAST(({prior}) AS DOUBLE) / {prior_days}"
    return f"CASE WHEN {r} + {p} = 0 THEN 0.0 ELSE ({r} - {p}) / NULLIF({r} + {p}, 0) END"


def _spans(f: FeatureSettings) -> list[tuple[str, int, int]]:
    """(column suffix, from days before the cutoff, to days before it) of each counted span."""
    spans = [(f"events_{w}d", w, 0) for w in f.event_windows_days]
    if not _trend_from_windows(f):
        recent, prior = f.trend_recent_days, f.trend_prior_days
        spans += [("recent", recent, 0), ("prior", recent + prior, recent)]
    return spans


def _counts(f: FeatureSettings, as_of: date, types: dict[str, str]) -> list[str]:
    """Per customer: events of each type, and of any type, in each span, in one pass over the
    events of the longest span. ``count(CASE ... THEN 1 END)`` is a 64-bit count; DuckDB sums
    integers (``sum(CASE ... THEN 1 ELSE 0 END)``) into 128-bit ones. On the benchmark's 20M
    events this takes 1.3 s, where counting per (customer, type) with such sums and pivoting
    those took 2.7-3.2 s."""

    def count_of(start: int, end: int, event_type: str | None = None) -> str:
        condition = f"ts >= {ts_literal(as_of, start)}"
        if end:
            condition += f" AND ts < {ts_literal(as_of, end)}"
        if event_type is not None:
            condition = f"event_type = {quote_text(event_type)} AND {condition}"
        return f"count(CASE WHEN {condition} THEN 1 END)"

    parts = []
    for event_type, name in types.items():
        parts += [f"{count_of(a, b, event_type)} AS {name}_{s}" for s, a, b in _spans(f)]
    parts += [f"{count_of(a, b)} AS {s}" for s, a, b in _spans(f)]
    return parts


def _trend_from_windows(f: FeatureSettings) -> bool:
    """With windows of 30 and 90 days, the 30-vs-prior-60 trend needs no counts of its own."""
    windows = f.event_windows_days
    return f.trend_recent_days in windows and f.trend_recent_days + f.trend_prior_days in windows


def _trend_parts(f: FeatureSettings, prefix: str) -> tuple[str, str]:
    """SQL for the recent and prior counts of a pivoted column prefix (``p.session_``)."""
    if not _trend_from_windows(f):
        return f"{prefix}recent", f"{prefix}prior"
    recent = f"{prefix}events_{f.trend_recent_days}d"
    whole = f"{prefix}events_{f.trend_recent_days + f.trend_prior_days}d"
    return recent, f"({whole} - {recent})"


def _history(f: FeatureSettings, as_of: date) -> list[str]:
    """Per customer over the whole history before the cutoff: recency, voice, email."""

    def count_if(condition: str) -> str:
        return f"count(CASE WHEN {condition} THEN 1 END)"

    in_email_window = f"ts >= {ts_literal(as_of, f.email_rate_window_days)}"
    return [
        "max(ts) AS last_event_ts",
        f"{count_if(f'event_type IN {text_list(f.support_event_types)}')} AS support_tickets",
        f"{count_if(f'event_type IN {text_list(f.referral_event_types)}')} AS referrals",
        f"{count_if(f'event_type IN {text_list(f.review_event_types)}')} AS reviews",
        count_if(f"event_type = {quote_text(f.email_sent_event_type)} AND {in_email_window}")
        + " AS emails_sent",
        count_if(f"event_type = {quote_text(f.email_open_event_type)} AND {in_email_window}")
        + " AS emails_opened",
        count_if(f"event_type = {quote_text(f.email_click_event_type)} AND {in_email_window}")
        + " AS emails_clicked",
    ]


MASK_BITS = 62  # bits of a BIGINT mask: 1 << 63 overflows a signed 64-bit number


def _day_bits(as_of: date, days: int, condition: str) -> list[str]:
    """``bit_or`` masks of the days (before the cutoff) with a row meeting ``condition``, in
    pieces of MASK_BITS days: bit i of piece k is the day ``k * MASK_BITS + i + 1`` days
    before ``as_of``."""
    offset = f"(date_diff('day', CAST(ts AS DATE), {date_literal(as_of)}) - 1)"
    pieces = []
    for k in range(-(-days // MASK_BITS)):
        low, high = k * MASK_BITS, min(days, (k + 1) * MASK_BITS) - 1
        pieces.append(
            f"bit_or(CASE WHEN {condition} AND {offset} BETWEEN {low} AND {high} "
            f"THEN CAST(1 AS BIGINT) << ({offset} - {low}) ELSE CAST(0 AS BIGINT) END)"
        )
    return pieces


def _channel_mask(channels: list[str]) -> str:
    """A row's channel as one bit of a BIGINT (no bit for NULL or an unlisted channel)."""
    if not channels:
        return "CAST(0 AS BIGINT)"
    cases = " ".join(f"WHEN {quote_text(c)} THEN {1 << i}" for i, c in enumerate(channels))
    return f"CAST(CASE channel {cases} ELSE 0 END AS BIGINT)"


class Touches(NamedTuple):
    """How the engagement query counts active days and channels (see :func:`_touch_counts`)."""

    in_pivoted: list[str]  # extra aggregates of ``pivoted`` (the days fall in its span)
    in_history: list[str]  # extra aggregates of ``history`` (the channels' window may not)
    ctes: str  # the CTEs that add the transactions' side
    active_days: str  # the result expressions
    channels_used: str
    tables: list[str]  # the CTEs whose customers join ``people``


def _touch_counts(as_of: date, f: FeatureSettings, channels: list[str] | None) -> Touches:
    """The active days and channels over events and transactions ("touches").

    With the channels known (at most MASK_BITS of them), days and channels are bit masks
    ORed per customer in the passes there are anyway: 1.1-1.9 s less on the benchmark's 30M
    rows than grouping the touches by day and by channel (finding the channels takes 0.5 s
    of it back). Otherwise the touches are grouped."""
    cutoff = ts_literal(as_of)
    longest = max(f.event_windows_days)
    activity = f.activity_window_days
    activity_from = ts_literal(as_of, activity)
    days_from = ts_literal(as_of, min(longest, activity))
    if channels is not None and len(channels) <= MASK_BITS:
        in_days = f"ts >= {days_from}"
        in_channels = f"ts >= {activity_from}"
        day_bits = _day_bits(as_of, min(longest, activity), in_days)
        mask = f"bit_or(CASE WHEN {in_channels} THEN {_channel_mask(channels)} END)"
        days = [f"{b} AS day_bits_{k}" for k, b in enumerate(day_bits)]
        ctes = f"""
tx_touches AS (
    SELECT customer_id, {", ".join(days)}, {mask} AS channel_bits
    FROM transactions
    WHERE ts < {cutoff} AND ({in_days} OR ({in_channels} AND channel IS NOT NULL))
    GROUP BY customer_id
),"""
        both = [
            f"bit_count(coalesce(p.day_bits_{k}, 0) | coalesce(t.day_bits_{k}, 0))"
            for k in range(len(day_bits))
        ]
        active = f"NULLIF({' + '.join(both)}, 0)"
        used = "NULLIF(bit_count(coalesce(h.channel_bits, 0) | coalesce(t.channel_bits, 0)), 0)"
        return Touches(days, [f"{mask} AS channel_bits"], ctes, active, used, ["tx_touches"])
    ctes = f"""
touches AS (
    SELECT customer_id, ts, channel FROM events WHERE ts >= {activity_from} AND ts < {cutoff}
    UNION ALL
    SELECT customer_id, ts, channel FROM transactions
    WHERE ts >= {activity_from} AND ts < {cutoff}
),
activity AS (
    SELECT customer_id, count(*) AS active_days
    FROM (
        SELECT customer_id, CAST(ts AS DATE) AS day FROM touches
        WHERE ts >= {ts_literal(as_of, longest)}
        GROUP BY customer_id, CAST(ts AS DATE)
    ) AS d
    GROUP BY customer_id
),
channels AS (
    SELECT customer_id, count(*) AS channels
    FROM (
        SELECT customer_id, channel FROM touches AS t WHERE channel IS NOT NULL
        GROUP BY customer_id, channel
    ) AS c
    GROUP BY customer_id
),"""
    return Touches([], [], ctes, "a.active_days", "c.channels", ["activity", "channels"])


def history_columns(as_of: date, f: FeatureSettings, channels: list[str] | None) -> list[str]:
    """Per customer over every event before the cutoff: what ``history`` aggregates."""
    return [*_history(f, as_of), *_touch_counts(as_of, f, channels).in_history]


def engagement_query(
    *,
    as_of: date,
    settings: FeatureSettings,
    stages: StageSettings,
    event_types: list[str],
    channels: list[str] | None = None,
    history_from: str | None = None,
) -> FeatureQuery:
    """Per-customer engagement features from ``events`` (and channels of ``transactions``).

    ``channels``: every channel of the data (``Dataset.channels``), which lets the touches be
    counted in bit masks; None counts them by grouping (same values). ``history_from``: a
    relation that already holds :func:`history_columns` per customer (the snapshot's shared
    pass over events); by default the query makes its own."""
    f = settings
    cutoff, today = ts_literal(as_of), date_literal(as_of)
    types = event_type_columns(event_types)
    longest = max(f.event_windows_days)
    counted_from = ts_literal(as_of, max(longest, f.trend_recent_days + f.trend_prior_days))
    activity = f.activity_window_days
    rate_window = f.email_rate_window_days
    recent, prior = f.trend_recent_days, f.trend_prior_days
    trend_suffix = per_type_suffixes(f)[-1]
    per_type = []
    for name in types.values():
        per_type += [f"p.{name}_events_{w}d" for w in f.event_windows_days]
        per_type.append(
            _trend(*_trend_parts(f, f"p.{name}_"), recent, prior) + f" AS {name}_{trend_suffix}"
        )
    totals = [f"p.events_{w}d" for w in f.event_windows_days]
    totals.append(_trend(*_trend_parts(f, "p."), recent, prior) + f" AS events_{trend_suffix}")
    touches = _touch_counts(as_of, f, channels)
    counts = ",\n        ".join([*_counts(f, as_of, types), *touches.in_pivoted])
    history = (
        f"SELECT * FROM {history_from}"
        if history_from is not None
        else events_per_customer([*_history(f, as_of), *touches.in_history], as_of)
    )
    joins = {"tx_touches": "t", "activity": "a", "channels": "c"}
    touch_joins = "".join(
        f"\nLEFT JOIN {name} {joins[name]} ON {joins[name]}.customer_id = people.customer_id"
        for name in touches.tables
    )
    people = "".join(f"\n    UNION SELECT customer_id FROM {name}" for name in touches.tables)
    sql = f"""
WITH pivoted AS (
    SELECT customer_id,
        {counts}
    FROM events
    WHERE ts >= {counted_from} AND ts < {cutoff}
    GROUP BY customer_id
),
history AS (
    {history}
),{touches.ctes}
nps AS (
    SELECT customer_id, max_by(value, ts) AS last_nps, avg(value) AS mean_nps,
        count(*) AS nps_responses
    FROM events
    WHERE ts < {cutoff} AND event_type IN {text_list(stages.nps_event_types)}
        AND value IS NOT NULL
    GROUP BY customer_id
),
people AS (
    SELECT customer_id FROM history{people}
)
SELECT people.customer_id,
    {", ".join(per_type + totals)},
    date_diff('day', CAST(h.last_event_ts AS DATE), {today}) AS days_since_last_event,
    {touches.active_days} AS active_days_{longest}d,
    {touches.channels_used} AS channels_{activity}d,
    h.support_tickets,
    h.referrals,
    h.reviews,
    n.last_nps,
    n.mean_nps,
    n.nps_responses,
    CAST(h.emails_opened AS DOUBLE) / NULLIF(h.emails_sent, 0) AS email_open_rate_{rate_window}d,
    CAST(h.emails_clicked AS DOUBLE) / NULLIF(h.emails_sent, 0) AS email_click_rate_{rate_window}d
FROM people
LEFT JOIN history h ON h.customer_id = people.customer_id
LEFT JOIN pivoted p ON p.customer_id = people.customer_id{touch_joins}
LEFT JOIN nps n ON n.customer_id = people.customer_id
"""
    columns = [
        *[col.split(" AS ")[-1].removeprefix("p.") for col in per_type + totals],
        "days_since_last_event",
        f"active_days_{longest}d",
        f"channels_{activity}d",
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
