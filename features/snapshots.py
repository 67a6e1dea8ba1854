"""Snapshots: features at a cutoff joined with the labels after it, one row per customer.

The one code path for training and scoring: training calls :func:`build_snapshots` at past
cutoffs with labels; scoring calls :func:`build_snapshot` at the present cutoff without.
Rows are the customers known before the cutoff (see :mod:`features.stages`); labels are
prefixed ``label_`` (``label_churned`` and ``label_days_to_purchase`` over the churn horizon,
``label_next_stage`` over the stage horizon,
``label_purchases``, ``label_spend`` over the CLV horizon).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterable, Sequence
from datetime import date, timedelta

import pandas as pd
import pyarrow as pa

from clm.errors import ConfigError, DataError
from clm.settings import ClmSettings
from features.contract import EXAMPLES_SHOWN
from features.engagement import (
    engagement_query,
    first_collision,
    history_columns,
    per_type_suffixes,
)
from features.labels import label_query
from features.rfm import rfm_query
from features.rollups import ensure_rollups
from features.sources import Dataset
from features.sql import (
    FeatureQuery,
    as_of_datetime,
    date_literal,
    events_per_customer,
    identifier,
    one_row,
    text_list,
    ts_literal,
)
from features.stages import signal_columns, stage_query

__all__ = [
    "absent_event_type_columns",
    "build_snapshot",
    "build_snapshots",
    "check_trained_event_types",
    "event_types_before",
    "fill_absent_event_types",
    "new_customer_row",
    "snapshot_sql",
    "snapshot_table",
]


def event_types_before(dataset: Dataset, *, as_of: date, settings: ClmSettings) -> list[str]:
    """The event types that get count columns: configured, or every type seen before as_of.
    Refuses NPS answers outside 0-10 first (every snapshot starts here)."""
    _refuse_bad_nps(dataset, settings.stages.nps_event_types)
    _warn_odd_nps(dataset, settings.stages.nps_event_types)
    _warn_unnamed_event_roles(dataset, settings)
    if settings.features.event_types is not None:
        configured = list(settings.features.event_types)
        if (collision := first_collision(configured)) is not None:
            clash, event_type, name = collision
            raise ConfigError(
                f"features.event_types: {clash!r} and {event_type!r} would both count as "
                f"'{name}_*' features; list one of them"
            )
        return configured
    rows = dataset.con.sql(
        f"SELECT DISTINCT event_type FROM events WHERE ts < {ts_literal(as_of)} ORDER BY 1"
    ).fetchall()
    types = [r[0] for r in rows]
    _refuse_colliding_types(dataset, types)
    if len(types) > settings.features.max_event_types:
        raise DataError(
            f"events: {len(types)} distinct event types before {as_of:%Y-%m-%d}, more than "
            f"features.max_event_types={settings.features.max_event_types}; list the ones that "
            "matter in features.event_types"
        )
    return types


def _event_roles(settings: ClmSettings) -> dict[str, list[str]]:
    """The settings that give event types a meaning, and the types each names."""
    st, f = settings.stages, settings.features
    return {
        "stages.nps_event_types": st.nps_event_types,
        "stages.cancel_event_types": st.cancel_event_types,
        "stages.lead_event_types": st.lead_event_types,
        "stages.advocacy_event_types": st.advocacy_event_types,
        "features.support_event_types": f.support_event_types,
        "features.referral_event_types": f.referral_event_types,
        "features.review_event_types": f.review_event_types,
        "features.email_sent_event_type": [f.email_sent_event_type],
        "features.email_open_event_type": [f.email_open_event_type],
        "features.email_click_event_type": [f.email_click_event_type],
    }


def _stem(event_type: str) -> str:
    return "".join(ch for ch in event_type.lower() if ch.isalnum())


def _warn_unnamed_event_roles(dataset: Dataset, settings: ClmSettings) -> None:
    """An event setting none of whose types occur, while a type of the data looks like one
    of them (``nps_response`` for ``nps``, ``subscription_cancelled`` for ``cancel``): an
    export with its own names, whose NPS answers, cancellations or advocacy would otherwise
    count for nothing without a word. Said once per dataset."""
    if not dataset.has("events") or "event roles" in dataset.said:
        return
    dataset.said.add("event roles")
    seen = dataset.event_types()
    roles = _event_roles(settings)
    named = {t for types in roles.values() for t in types}
    unnamed = [t for t in seen if t not in named]
    hints = []
    for setting, types in roles.items():
        if any(t in seen for t in types):
            continue
        stems = [_stem(t) for t in types if len(_stem(t)) >= 3]
        alike = [t for t in unnamed if any(stem in _stem(t) for stem in stems)]
        if alike:
            shown = ", ".join(
                f"{t} ({seen[t][1]:,} with a value)" if seen[t][1] else t for t in alike[:3]
            )
            hints.append(f"{setting} names {', '.join(types)}, none in the data, which has {shown}")
    if hints:
        warnings.warn(
            f"{dataset.sources['events']}: {'; '.join(hints)}: events of a type no setting "
            "names are only counted, so their NPS answers, cancellations, advocacy or email "
            "rates count for nothing; name your types in those settings (clm.toml)",
            UserWarning,
            stacklevel=3,
        )


NPS_SCALE = (0, 10)
MIN_NPS_ANSWERS_FOR_SCALE = 20  # fewer answers all at 5 or less can be a bad month


def _refuse_bad_nps(dataset: Dataset, nps_types: list[str]) -> None:
    """NPS answers (events of the NPS types with a value) are 0-10: one outside would move
    the NPS features and the promoter signal of the stage rules."""
    low, high = NPS_SCALE
    bad = (
        f"event_type IN {text_list(nps_types)} AND value IS NOT NULL "
        f"AND NOT (value BETWEEN {low} AND {high} AND value = round(value))"
    )
    found = dataset.con.execute(
        f"SELECT _row, value, count(*) OVER () FROM events WHERE {bad} "
        f"ORDER BY _row LIMIT {EXAMPLES_SHOWN}"
    ).fetchall()
    if not found:
        return
    total = found[0][2]
    places = dataset.row_places("events", [r[0] for r in found])
    shown = ", ".join(f"{places[r]} {v:g}" for r, v, _ in found)
    more = f" and {total - len(found)} more" if total > len(found) else ""
    raise DataError(
        f"{dataset.sources['events']}: column {dataset.column_label('events', 'value')}: "
        f"{total} NPS answer(s) "
        f"({', '.join(nps_types)}) outside {low}-{high} or not whole (expected a whole score "
        f"from {low} to {high}): {shown}{more}"
    )


def _warn_odd_nps(dataset: Dataset, nps_types: list[str]) -> None:
    """NPS answers that are valid but look like another survey: all on 0-5 (a 1-5 scale
    read as NPS makes everyone a detractor), and NPS events without an answer."""
    answers, highest, unanswered = one_row(
        dataset.con,
        f"SELECT count(value), max(value), count(*) - count(value) FROM events "
        f"WHERE event_type IN {text_list(nps_types)}",
    )
    label = dataset.sources.get("events", "events")
    if answers >= MIN_NPS_ANSWERS_FOR_SCALE and highest <= 5:
        warnings.warn(
            f"{label}: all {answers:,} NPS answers ({', '.join(nps_types)}) are 5 or less: "
            "NPS is asked on 0-10 (promoters 9-10); answers on a 1-5 scale make every customer "
            "a detractor (rescale them, or use another event type)",
            UserWarning,
            stacklevel=4,
        )
    if unanswered:
        warnings.warn(
            f"{label}: {unanswered:,} NPS event(s) ({', '.join(nps_types)}) without a value "
            "are counted as events, not as answers",
            UserWarning,
            stacklevel=4,
        )


def _refuse_colliding_types(dataset: Dataset, types: list[str]) -> None:
    """Two event types that would name the same columns ('NPS' and 'nps'), with the first
    row of each."""
    if (collision := first_collision(types)) is None:
        return
    *clash, name = collision
    first = dict(
        dataset.con.execute(
            "SELECT event_type, min(_row) FROM events WHERE event_type IN (?, ?) GROUP BY 1",
            clash,
        ).fetchall()
    )
    places = dataset.row_places("events", [first[t] for t in clash])
    shown = " and ".join(f"{t!r} ({places[first[t]]})" for t in clash)
    raise DataError(
        f"{dataset.sources['events']}: column "
        f"{dataset.column_label('events', 'event_type')}: {shown} would both count as "
        f"'{name}_*' features (expected event types that differ by more than case and "
        "punctuation); spell them alike or set features.event_types"
    )


def absent_event_type_columns(
    wanted: Iterable[str], present: Collection[str], settings: ClmSettings
) -> list[str]:
    """The per-event-type columns among ``wanted`` that ``present`` lacks: a model trained on
    data with an event type (referrals, say) meets data with none of it before the cutoff,
    where every customer's counts and trends of that type are 0. Other missing columns are
    left out (for the caller to refuse)."""
    return [n for n in wanted if n not in present and _event_type_of(n, settings) is not None]


def _event_type_of(name: str, settings: ClmSettings) -> str | None:
    """The event type (as its column names spell it) of a per-event-type column, else None."""
    suffixes = ["_" + s for s in per_type_suffixes(settings.features)]
    suffix = next((s for s in suffixes if name.endswith(s)), None)
    fragment = name[: -len(suffix)] if suffix else ""
    return fragment if fragment and identifier(fragment) == fragment else None


def check_champion_features(
    wanted: Iterable[str], present: Collection[str], *, as_of: date, settings: ClmSettings
) -> None:
    """The champions' features (``wanted``) that the snapshot's columns (``present``) lack,
    other than event-type counts known to be 0: an attribute the data no longer has, say.
    Scoring without them would change every score in silence, so it is refused."""
    absent = set(absent_event_type_columns(wanted, present, settings))
    missing = [n for n in dict.fromkeys(wanted) if n not in present and n not in absent]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"the champions need features {', '.join(missing[:5])}{more} that the data at "
            f"{as_of} lacks (were they trained on data with other columns, or with other "
            "feature settings, such as features.purchase_windows_days?)"
        )


def check_trained_event_types(
    wanted: Iterable[str],
    dataset: Dataset,
    *,
    as_of: date,
    settings: ClmSettings,
    event_types: list[str],
) -> None:
    """Models trained with event types (``wanted``: their feature names) meet this data:
    with no events at all before ``as_of`` (a lost events file) every engagement feature
    would read 0, so that is refused; types the data lacks are warned about (their counts
    are 0 for everyone). ``event_types``: :func:`event_types_before`'s answer."""
    names = set(wanted)
    suffixes = per_type_suffixes(settings.features)
    # A type has every per-type column ("events_trend_..." is the all-events trend).
    trained = {
        t
        for n in names
        if (t := _event_type_of(n, settings)) is not None
        and all(f"{t}_{suffix}" in names for suffix in suffixes)
    }
    if not trained:
        return
    if settings.features.event_types is None:
        seen = set(event_types)
    else:  # configured types are counted whether the data has them or not
        rows = dataset.con.sql(
            f"SELECT DISTINCT event_type FROM events WHERE ts < {ts_literal(as_of)}"
        ).fetchall()
        seen = {r[0] for r in rows}
    if not seen:
        raise DataError(
            f"the data has no events before {as_of:%Y-%m-%d}, but the champions were trained "
            f"with events ({', '.join(sorted(trained)[:5])}{', ...' if len(trained) > 5 else ''}"
            "): every customer would look "
            "never engaged. Add the events table, or retrain on this data"
        )
    lacking = sorted(trained - {identifier(t) for t in seen})
    if lacking:
        warnings.warn(
            f"the data has no {', '.join(lacking)} events before {as_of:%Y-%m-%d}; the "
            "champions were trained with them, and score their counts as 0 for everyone",
            UserWarning,
            stacklevel=3,
        )


def fill_absent_event_types(
    frame: pd.DataFrame, wanted: Iterable[str], settings: ClmSettings
) -> list[str]:
    """Add to ``frame`` (feature rows) the :func:`absent_event_type_columns`, 0 for every
    customer; returns their names."""
    absent = absent_event_type_columns(wanted, set(frame.columns), settings)
    for name in absent:
        frame[name] = 0
    return absent


def _feature_columns(alias: str, query: FeatureQuery) -> list[str]:
    return [
        f"coalesce({alias}.{c}, 0) AS {c}" if c in query.zero_fill else f"{alias}.{c}"
        for c in query.columns
    ]


def snapshot_sql(
    *,
    as_of: date,
    settings: ClmSettings,
    event_types: list[str],
    attributes: Sequence[str] = (),
    labels: bool = False,
    channels: list[str] | None = None,
) -> str:
    """The snapshot query (DuckDB dialect, transpilable to Spark SQL by features.sql.to_spark).

    ``channels``: every channel of the data (``Dataset.channels``), so that the engagement
    query counts channels and active days in bit masks (see features.engagement)."""
    # One pass over the events before the cutoff for what the stage and the engagement
    # queries both aggregate per customer (1.4 s less on the benchmark's 20M events).
    shared = "event_history"
    history = events_per_customer(
        [*signal_columns(settings.stages), *history_columns(as_of, settings.features, channels)],
        as_of,
    )
    stage = stage_query(as_of=as_of, settings=settings.stages, signals_from=shared)
    rfm = rfm_query(as_of=as_of, settings=settings.features)
    engagement = engagement_query(
        as_of=as_of,
        settings=settings.features,
        stages=settings.stages,
        event_types=event_types,
        channels=channels,
        history_from=shared,
    )
    select = [
        "s.customer_id",
        f"{date_literal(as_of)} AS as_of",
        "s.stage",
        "s.days_in_stage",
        *_feature_columns("r", rfm),
        *_feature_columns("e", engagement),
        f"CASE WHEN c.signup_date < {ts_literal(as_of)} THEN date_diff('day', "
        f"CAST(c.signup_date AS DATE), {date_literal(as_of)}) END AS days_since_signup",
        # A customer who signs up after the cutoff: attributes are as of the signup (a row
        # written then), so they are not known at the cutoff either.
        *[
            f"CASE WHEN c.signup_date IS NULL OR c.signup_date < {ts_literal(as_of)} "
            f"THEN c.{a} END AS {a}"
            for a in attributes
        ],
    ]
    joins = [
        f"LEFT JOIN ({rfm.sql}) AS r ON r.customer_id = s.customer_id",
        f"LEFT JOIN ({engagement.sql}) AS e ON e.customer_id = s.customer_id",
        "LEFT JOIN customers AS c ON c.customer_id = s.customer_id",
    ]
    if labels:
        horizons = settings.labels
        wanted = {  # label column -> (horizon, column of the label query)
            "label_churned": (horizons.churn_horizon_days, "churned"),
            "label_next_stage": (horizons.stage_horizon_days, "next_stage"),
            "label_days_to_purchase": (horizons.churn_horizon_days, "days_to_purchase"),
            "label_purchases": (horizons.clv_horizon_days, "purchases"),
            "label_spend": (horizons.clv_horizon_days, "spend"),
        }
        # One label query per distinct horizon (churn and stage share 90 days by default).
        aliases = {h: f"l{h}" for h in sorted({h for h, _ in wanted.values()})}
        select += [f"{aliases[h]}.{column} AS {name}" for name, (h, column) in wanted.items()]
        joins += [
            f"LEFT JOIN ({label_query(as_of=as_of, horizon_days=h, settings=settings.stages).sql})"
            f" AS {alias} ON {alias}.customer_id = s.customer_id"
            for h, alias in aliases.items()
        ]
    body = ",\n    ".join(select)
    return (
        f"WITH {shared} AS MATERIALIZED (\n    {history}\n)\n"
        f"SELECT {body}\nFROM ({stage.sql}) AS s\n" + "\n".join(joins)
    )


def _check_cutoff(dataset: Dataset, as_of: date, settings: ClmSettings, labels: bool) -> None:
    first, last = dataset.date_range()
    if first is None or last is None:
        raise DataError("transactions and events are empty: nothing to build features from")
    cutoff = as_of_datetime(as_of)
    if cutoff <= first:
        raise DataError(
            f"as_of {as_of:%Y-%m-%d} is not after the first record ({first:%Y-%m-%d}); "
            "no customer is known before it"
        )
    stale = (cutoff - as_of_datetime(last.date())).days
    if stale > settings.features.stale_after_days:
        warnings.warn(
            f"as_of {as_of:%Y-%m-%d} is {stale:,} days after the data's last record "
            f"({last:%Y-%m-%d}): every customer looks inactive since then; check the date or "
            "the export (features.stale_after_days)",
            UserWarning,
            stacklevel=4,
        )
    if labels:
        horizon = max(
            settings.labels.churn_horizon_days,
            settings.labels.stage_horizon_days,
            settings.labels.clv_horizon_days,
        )
        data_end = as_of_datetime(last.date()) + timedelta(days=1)
        if cutoff + timedelta(days=horizon) > data_end:
            raise DataError(
                f"as_of {as_of:%Y-%m-%d}: the {horizon}-day label window ends "
                f"{cutoff + timedelta(days=horizon):%Y-%m-%d}, after the last record "
                f"({last:%Y-%m-%d}); choose an earlier cutoff or a shorter horizon "
                "(labels.*_horizon_days; clm features build --horizon-days, --clv-horizon-days)"
            )


def _integers_as_int64(table: pa.Table) -> pa.Table:
    """DuckDB sums whole numbers into 128-bit decimals; bring them back to int64 / float64."""
    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type):
            target = pa.int64() if field.type.scale == 0 else pa.float64()
            table = table.set_column(i, field.name, table.column(i).cast(target))
    return table


def snapshot_table(
    dataset: Dataset,
    *,
    as_of: date,
    settings: ClmSettings,
    labels: bool = False,
    event_types: list[str] | None = None,
) -> pa.Table:
    """One snapshot as an Arrow table, sorted by customer_id."""
    _check_cutoff(dataset, as_of, settings, labels)
    ensure_rollups(dataset.con)
    types = (
        event_types
        if event_types is not None
        else event_types_before(dataset, as_of=as_of, settings=settings)
    )
    sql = snapshot_sql(
        as_of=as_of,
        settings=settings,
        event_types=types,
        attributes=list(dataset.attributes),
        labels=labels,
        channels=dataset.channels(),
    )
    table = dataset.con.sql(
        f"SELECT * FROM ({sql}) AS snapshot ORDER BY customer_id"
    ).to_arrow_table()
    return _integers_as_int64(table)


def build_snapshot(
    dataset: Dataset,
    *,
    as_of: date,
    settings: ClmSettings,
    labels: bool = False,
    event_types: list[str] | None = None,
) -> pd.DataFrame:
    """Features (and, with ``labels``, targets) of every customer known before ``as_of``."""
    table = snapshot_table(
        dataset, as_of=as_of, settings=settings, labels=labels, event_types=event_types
    )
    return table.to_pandas()


def build_snapshots(
    dataset: Dataset, *, cutoffs: Sequence[date], settings: ClmSettings, labels: bool = True
) -> pd.DataFrame:
    """Snapshots at several cutoffs, stacked; the event-type columns are those of the latest."""
    if not cutoffs:
        raise ValueError("cutoffs must name at least one date")
    types = event_types_before(dataset, as_of=max(cutoffs), settings=settings)
    frames = [
        build_snapshot(dataset, as_of=c, settings=settings, labels=labels, event_types=types)
        for c in sorted(cutoffs)
    ]
    return pd.concat(frames, ignore_index=True)


def new_customer_row(
    dataset: Dataset, *, as_of: date, settings: ClmSettings, event_types: list[str] | None = None
) -> dict[str, object]:
    """The features of a customer with no history at all at ``as_of``: what a snapshot row
    holds for someone known only from now on (counts 0, recencies and averages empty)."""
    types = (
        event_types
        if event_types is not None
        else event_types_before(dataset, as_of=as_of, settings=settings)
    )
    row: dict[str, object] = {"stage": "awareness", "days_in_stage": 0}
    for query in (
        rfm_query(as_of=as_of, settings=settings.features),
        engagement_query(
            as_of=as_of, settings=settings.features, stages=settings.stages, event_types=types
        ),
    ):
        row.update({c: 0 if c in query.zero_fill else None for c in query.columns})
    row["days_since_signup"] = None
    row.update({attribute: None for attribute in dataset.attributes})
    return row
