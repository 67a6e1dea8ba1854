"""The figures of the lifecycle report, computed from validated data as of a cutoff.

Every figure is point-in-time: stages come from :func:`features.stages.stages_at` at month
boundaries before ``as_of`` and the customer table from the same snapshot ``clm features
build`` writes, so the report's stage counts are those of the features. With a scores file
(``clm score``) the value figures use the champion CLV and the risk / action sections appear;
without one, CLV is BG/NBD x Gamma-Gamma fitted at the cutoff (buyers only).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from clm.errors import DataError
from clm.settings import ClmSettings
from features.segments import SEGMENTS, RfmScale
from features.snapshots import build_snapshot
from features.sources import Dataset, attribute_name
from features.sql import text_list, ts_literal
from features.stages import PROSPECT_STAGES, STAGES, stages_at

__all__ = [
    "FUNNEL",
    "SCORE_COLUMNS",
    "Report",
    "build_report",
    "read_scores",
    "rfm_segments",
]

FUNNEL = ("awareness", "consideration", "purchase", "retention", "advocacy")
# How far along the funnel a stage is; a churned customer has bought at least once.
_RANK = {"awareness": 0, "consideration": 1, "purchase": 2, "retention": 3, "advocacy": 4}
_RANK["churned"] = 2
_BUYING = ("purchase", "retention", "advocacy")
SCORE_COLUMNS = ("customer_id", "stage", "churn_probability", "churn_risk", "clv", "action")
RISK_BANDS = ("low", "medium", "high", "prospect")


@dataclass
class Report:
    """Everything the HTML shows, as plain frames (tests read the numbers from here)."""

    as_of: date
    source: str
    kpis: dict[str, float]
    customers: pd.DataFrame  # customer_id, stage, channel, clv, rfm_segment (+ scores)
    stage_counts: pd.DataFrame  # stage, customers, share
    funnel: pd.DataFrame  # stage, reached (at least this stage), now (in it today)
    channel_source: str  # the attribute column, or "first touch"
    conversion: pd.DataFrame  # period, channel, from_stage, to_stage, customers, converted, rate
    churn_by_month: pd.DataFrame  # month, active_buyers, churned, rate
    cohort_retention: pd.DataFrame  # cohort, months_since_signup, size, active, share
    cohort_churn: pd.DataFrame  # cohort, buyers, churned, rate
    transitions: pd.DataFrame  # from_stage x to_stage shares over the stage horizon
    transition_days: int
    clv_source: str
    rfm: pd.DataFrame  # segment, customers, share, recency, frequency, spend_365d, clv
    nps: dict[str, float]  # responses, promoters, passives, detractors (shares), nps
    nps_by_month: pd.DataFrame  # month, responses, promoters, passives, detractors, nps
    referrals_by_month: pd.DataFrame  # month, referrals, referrers
    referrals_by_stage: pd.DataFrame  # stage, customers, referrers, share
    scores_source: str | None = None
    risk_by_stage: pd.DataFrame | None = None  # stage x risk band counts
    value_by_action: pd.DataFrame | None = None  # action, customers, expected_value, mean_value
    top_at_risk: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def _label(start: date, end: date) -> str:
    """A calendar month as ``YYYY-MM``; an interval that is not one, by its dates."""
    if start.day == 1 and end.day == 1:
        return start.strftime("%Y-%m")
    return f"{start} to {end}"


def _labels(boundaries: list[date]) -> list[str]:
    """The label of each [boundary, next boundary) interval, oldest first."""
    return [_label(a, b) for a, b in itertools.pairwise(boundaries)]


def _by_interval(frame: pd.DataFrame, boundaries: list[date], column: str = "ts") -> pd.Series:
    """The label of the interval each row's ``column`` falls in (rows are within the span)."""
    edges = pd.to_datetime(pd.Series(boundaries)).to_numpy()
    position = np.searchsorted(edges, pd.to_datetime(frame[column]).to_numpy(), side="right") - 1
    labels = np.array(_labels(boundaries), dtype=object)
    return pd.Series(labels[position], index=frame.index)


def _month_starts(as_of: date, months: int) -> list[date]:
    """``as_of`` and the ``months`` month boundaries before it, oldest first."""
    anchor = pd.Timestamp(as_of)
    return [(anchor - pd.DateOffset(months=k)).date() for k in range(months, -1, -1)]


def _stage_history(dataset: Dataset, boundaries: list[date], settings: ClmSettings) -> pd.DataFrame:
    """customer_id x boundary -> stage (missing where not yet known)."""
    frames = {
        b: stages_at(dataset.con, as_of=b, settings=settings.stages).set_index("customer_id")[
            "stage"
        ]
        for b in boundaries
    }
    return pd.DataFrame(frames)


def _channel_inputs(dataset: Dataset, as_of: date, attribute: str) -> pd.DataFrame:
    """Per customer: the acquisition-channel attribute with its ``signup_date``, and the
    channel of the first event or transaction before the cutoff (first touch)."""
    cutoff = ts_literal(as_of)
    columns = {c[0] for c in dataset.con.sql("DESCRIBE customers").fetchall()}
    column = attribute_name(attribute)
    attr = f'CAST("{column}" AS VARCHAR)' if column in columns else "NULL"
    return (
        dataset.con.sql(
            f"""
            WITH touch AS (
                SELECT customer_id, arg_min(channel, ts) AS first_touch FROM (
                    SELECT customer_id, ts, channel FROM transactions
                    WHERE ts < {cutoff} AND channel IS NOT NULL
                    UNION ALL
                    SELECT customer_id, ts, channel FROM events
                    WHERE ts < {cutoff} AND channel IS NOT NULL
                ) GROUP BY customer_id
            )
            SELECT customer_id, t.first_touch, {attr} AS attribute, c.signup_date
            FROM touch t FULL OUTER JOIN customers c USING (customer_id)
            """
        )
        .df()
        .set_index("customer_id")
    )


def _channel_source(inputs: pd.DataFrame, attribute: str) -> str:
    return attribute if inputs["attribute"].notna().any() else "first touch"


def _channel_at(inputs: pd.DataFrame, when: date, index: pd.Index) -> pd.Series:
    """The channel as known at ``when``: the attribute once the customer has signed up (or
    always, without a ``signup_date``), else the first-touch channel, else ``unknown``."""
    rows = inputs.reindex(index)
    signed = rows["signup_date"].isna() | (pd.to_datetime(rows["signup_date"]) < pd.Timestamp(when))
    channel = rows["attribute"].where(signed & rows["attribute"].notna(), rows["first_touch"])
    return channel.fillna("unknown").astype(str).rename("channel")


def _conversion(
    history: pd.DataFrame, channels: pd.DataFrame, starts: list[date], ends: list[date]
) -> pd.DataFrame:
    """Per period and channel: of the customers in a funnel stage at the period's start, the
    share further along the funnel at its end (a churned customer counts as having bought)."""
    rows = []
    for start, end in zip(starts, ends, strict=True):
        before, after = history[start], history[end]
        known = before.notna()
        moved = after[known].map(_RANK).to_numpy(dtype=float) > before[known].map(_RANK).to_numpy(
            dtype=float
        )
        frame = pd.DataFrame(
            {
                "stage": before[known],
                "moved": moved,
                "channel": _channel_at(channels, start, before.index[known]).to_numpy(),
            }
        )
        counts = pd.concat([frame, frame.assign(channel="all")]).groupby(["channel", "stage"])[
            "moved"
        ]
        sizes, moved_counts = counts.size(), counts.sum()
        for name in ["all", *sorted(set(frame["channel"]))]:
            for i, stage in enumerate(FUNNEL[:-1]):
                rows.append(
                    {
                        "period": f"{start} to {end}",
                        "channel": name,
                        "from_stage": stage,
                        "to_stage": FUNNEL[i + 1],
                        "customers": int(sizes.get((name, stage), 0)),
                        "converted": int(moved_counts.get((name, stage), 0)),
                    }
                )
    out = pd.DataFrame(rows)
    out["rate"] = out["converted"] / out["customers"].where(out["customers"] > 0)
    return out


def _churn_by_month(history: pd.DataFrame, boundaries: list[date]) -> pd.DataFrame:
    """Of the buyers not churned at a month's start, the share churned at its end."""
    rows = []
    for start, end in itertools.pairwise(boundaries):
        active = history[start].isin(_BUYING)
        churned = int((history.loc[active, end] == "churned").sum())
        rows.append(
            {
                "month": _label(start, end),  # the same labels as _labels(boundaries)
                "active_buyers": int(active.sum()),
                "churned": churned,
            }
        )
    out = pd.DataFrame(rows)
    out["rate"] = out["churned"] / out["active_buyers"].where(out["active_buyers"] > 0)
    return out


def _transitions(history: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Row-normalised stage-to-stage matrix: where the customers in each stage at ``start``
    are at ``end``."""
    both = history[[start, end]].dropna()
    counts = pd.crosstab(both[start], both[end]).reindex(index=STAGES, columns=STAGES).fillna(0)
    totals = counts.sum(axis=1)
    return counts.div(totals.where(totals > 0), axis=0)


def _cohorts(
    dataset: Dataset,
    stage: pd.Series,
    as_of: date,
    quarters: int,
    months: int,
    lead_types: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Signup-quarter cohorts: customers by the quarter they signed up (``signup_date``, else
    their first lead signal such as a ``signup`` event, else their first purchase; visitors
    who never did any of these are in no cohort). The share of each cohort buying in each
    month since signup (complete months only), and its churn rate today."""
    cutoff = ts_literal(as_of)
    last_day = pd.Timestamp(as_of) - pd.Timedelta(days=1)
    first_quarter = last_day.to_period("Q").start_time - pd.DateOffset(months=3 * (quarters - 1))
    people = dataset.con.sql(
        f"""
        WITH lead AS (
            SELECT customer_id, min(ts) AS ts FROM events
            WHERE event_type IN {text_list(lead_types)} AND ts < {cutoff} GROUP BY 1
        ), bought AS (
            SELECT customer_id, min(ts) AS ts FROM transactions WHERE ts < {cutoff} GROUP BY 1
        ), signed AS (
            SELECT customer_id, signup_date AS ts FROM customers WHERE signup_date < {cutoff}
        ), ids AS (
            SELECT customer_id FROM lead UNION SELECT customer_id FROM bought
            UNION SELECT customer_id FROM signed
        )
        SELECT i.customer_id,
               date_trunc('month', coalesce(s.ts, l.ts, b.ts)) AS signup_month
        FROM ids i LEFT JOIN signed s USING (customer_id) LEFT JOIN lead l USING (customer_id)
             LEFT JOIN bought b USING (customer_id)
        """
    ).df()
    people["signup_month"] = pd.to_datetime(people["signup_month"])
    people = people[people["signup_month"] >= pd.Timestamp(first_quarter)].copy()
    people["cohort"] = people["signup_month"].dt.to_period("Q").astype(str)
    buys = dataset.con.sql(
        f"""
        SELECT DISTINCT customer_id, date_trunc('month', ts) AS month FROM transactions
        WHERE ts < {cutoff} AND amount > 0
        """
    ).df()
    buys["month"] = pd.to_datetime(buys["month"])
    joined = buys.merge(people, on="customer_id")
    joined["k"] = (joined["month"].dt.year - joined["signup_month"].dt.year) * 12 + (
        joined["month"].dt.month - joined["signup_month"].dt.month
    )
    # Month k after signup is complete when it ends on or before as_of: k < months between.
    last_complete = (pd.Timestamp(as_of).year * 12 + pd.Timestamp(as_of).month) - (
        joined["signup_month"].dt.year * 12 + joined["signup_month"].dt.month
    )
    joined = joined[(joined["k"] >= 0) & (joined["k"] < months) & (joined["k"] < last_complete)]
    sizes = people.groupby("cohort").size().rename("size")
    # Only months every member of the cohort has completed.
    cohort_last = people.groupby("cohort")["signup_month"].max()
    active = joined.groupby(["cohort", "k"])["customer_id"].nunique().rename("active")
    grid = []
    for cohort, size in sizes.items():
        newest = pd.Timestamp(cohort_last[cohort])
        complete = (pd.Timestamp(as_of).year - newest.year) * 12 + (
            pd.Timestamp(as_of).month - newest.month
        )
        for k in range(min(months, complete)):
            grid.append({"cohort": cohort, "months_since_signup": k, "size": int(size)})
    retention = pd.DataFrame(grid, columns=["cohort", "months_since_signup", "size"])
    retention["active"] = [
        int(active.get((c, k), 0))
        for c, k in zip(retention["cohort"], retention["months_since_signup"], strict=True)
    ]
    retention["share"] = retention["active"] / retention["size"]
    members = people.set_index("customer_id")["cohort"]
    today = stage.reindex(members.index)
    ever_bought = today.isin((*_BUYING, "churned"))
    churn = (
        pd.DataFrame({"cohort": members, "buyer": ever_bought, "churned": today == "churned"})
        .groupby("cohort")[["buyer", "churned"]]
        .sum()
        .rename(columns={"buyer": "buyers"})
        .reset_index()
    )
    churn["rate"] = churn["churned"] / churn["buyers"].where(churn["buyers"] > 0)
    return retention, churn.astype({"buyers": int, "churned": int})


def rfm_segments(recency_days: pd.Series, frequency: pd.Series) -> pd.Series:
    """The classic R x F segment of each buyer among these buyers (features.segments)."""
    scale = RfmScale.of(recency_days, frequency)
    return pd.Series(scale.segments(recency_days, frequency), index=recency_days.index)


def _rfm(customers: pd.DataFrame) -> pd.DataFrame:
    buyers = customers[customers["days_since_last_purchase"].notna()]
    table = (
        buyers.groupby("rfm_segment")
        .agg(
            customers=("customer_id", "size"),
            recency=("days_since_last_purchase", "mean"),
            frequency=("purchase_days", "mean"),
            spend_365d=("spend_365d", "sum"),
            clv=("clv", "mean"),
        )
        .reindex([s for s in (*SEGMENTS, "other") if s in set(buyers["rfm_segment"])])
    )
    table["share"] = table["customers"] / table["customers"].sum()
    return table.reset_index().rename(columns={"rfm_segment": "segment"})


PROMOTER, PASSIVE = 9, 7  # NPS: promoters answer 9-10, passives 7-8, detractors 0-6


def _nps_shares(values: pd.Series) -> dict[str, float]:
    n = len(values)
    if n == 0:
        nan = float("nan")
        return {"responses": 0.0, "promoters": nan, "passives": nan, "detractors": nan, "nps": nan}
    promoters = float((values >= PROMOTER).mean())
    detractors = float((values < PASSIVE).mean())
    return {
        "responses": float(n),
        "promoters": promoters,
        "passives": 1.0 - promoters - detractors,
        "detractors": detractors,
        "nps": 100 * (promoters - detractors),
    }


def _nps(
    dataset: Dataset, as_of: date, types: list[str], boundaries: list[date]
) -> tuple[dict[str, float], pd.DataFrame]:
    """NPS over the last 365 days (% promoters - % detractors) and per month (answers outside
    0-10 were refused with the snapshot, see features.snapshots)."""
    cutoff = ts_literal(as_of)
    since = min(pd.Timestamp(as_of) - pd.Timedelta(days=365), pd.Timestamp(boundaries[0]))
    answers = dataset.con.sql(
        f"""
        SELECT customer_id, ts, value FROM events
        WHERE event_type IN {text_list(types)} AND value IS NOT NULL
          AND ts >= {ts_literal(since.date())} AND ts < {cutoff}
        ORDER BY customer_id, ts
        """
    ).df()
    year = answers[pd.to_datetime(answers["ts"]) >= pd.Timestamp(as_of) - pd.Timedelta(days=365)]
    recent = answers[pd.to_datetime(answers["ts"]) >= pd.Timestamp(boundaries[0])]
    months = _by_interval(recent, boundaries)
    rows = [
        {"month": label, **_nps_shares(recent.loc[months == label, "value"])}
        for label in _labels(boundaries)
    ]
    return _nps_shares(year["value"]), pd.DataFrame(rows)


def _referrals(
    dataset: Dataset, as_of: date, types: list[str], boundaries: list[date], stage: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    year_ago = pd.Timestamp(as_of) - pd.Timedelta(days=365)
    since = min(year_ago, pd.Timestamp(boundaries[0]))
    events = dataset.con.sql(
        f"""
        SELECT customer_id, ts FROM events WHERE event_type IN {text_list(types)}
          AND ts >= {ts_literal(since.date())} AND ts < {ts_literal(as_of)}
        """
    ).df()
    when = pd.to_datetime(events["ts"])
    recent = events[when >= pd.Timestamp(boundaries[0])]
    by_month = (
        recent.assign(month=_by_interval(recent, boundaries))
        .groupby("month")
        .agg(referrals=("customer_id", "size"), referrers=("customer_id", "nunique"))
        .reindex(_labels(boundaries), fill_value=0)
        .rename_axis("month")
        .reset_index()
    )
    referrers = set(events.loc[when >= year_ago, "customer_id"])
    frame = pd.DataFrame({"stage": stage, "referrer": stage.index.isin(referrers)})
    by_stage: pd.DataFrame = (
        frame.groupby("stage")
        .agg(customers=("referrer", "size"), referrers=("referrer", "sum"))
        .reindex(STAGES)
        .fillna(0)
        .astype(int)
    )
    by_stage["share"] = by_stage["referrers"] / by_stage["customers"].where(
        by_stage["customers"] > 0
    )
    return by_month, by_stage.reset_index()


def _refuse_rows(path: Path, column: str, bad: pd.Series, expected: str) -> None:
    if bad.any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(bad.to_numpy())[:5])
        raise DataError(
            f"--scores {path}: column '{column}': {int(bad.sum())} value(s) not {expected}: "
            f"row(s) {rows}"
        )


def read_scores(
    path: Path, as_of: date | None = None, actions: Collection[str] | None = None
) -> pd.DataFrame:
    """A ``clm score`` output, checked for the columns the report needs and, when it records
    its cutoff, for being scored as of ``as_of``: a Parquet or CSV file from the local engine,
    or the folder of Parquet parts partitioned by stage that ``--engine spark`` writes (its
    cutoff in ``_common_metadata``)."""
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"--scores {path}: file not found")
    scored_as_of: str | None = None
    try:
        if path.is_dir():
            common = path / "_common_metadata"
            metadata = (pq.read_schema(common).metadata or {}) if common.is_file() else {}
            if not any(path.glob("**/*.parquet")):
                raise DataError(
                    f"--scores {path}: a folder with no Parquet parts; expected the output of "
                    "clm score (a .parquet or .csv file, or the folder --engine spark writes)"
                )
            scores = pd.read_parquet(path)
            if "stage" in scores.columns:  # the partition column is read back as categories
                scores["stage"] = scores["stage"].astype(object)
        elif name.endswith((".parquet", ".pq")):
            metadata = pq.read_schema(path).metadata or {}
            scores = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz")):
            metadata = {}
            scores = pd.read_csv(path, dtype={"customer_id": "string"})
        else:
            raise DataError(f"--scores {path}: expected a .parquet or .csv file from clm score")
        scored_as_of = metadata.get(b"clm.as_of", b"").decode() or None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"--scores {path}: cannot be read ({exc})") from exc
    if as_of is not None and scored_as_of is not None and scored_as_of != as_of.isoformat():
        raise DataError(
            f"--scores {path} was scored as of {scored_as_of}, not --as-of {as_of}: score "
            f"again with clm score --as-of {as_of}"
        )
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise DataError(
            f"--scores {path}: missing column(s) {', '.join(missing)}; expected the output of "
            "clm score"
        )
    if scores.empty:
        raise DataError(f"--scores {path}: no rows; expected the output of clm score")
    ids = scores["customer_id"].astype("string").str.strip()
    _refuse_rows(path, "customer_id", ids.isna() | (ids == ""), "a non-empty customer id")
    probability = pd.to_numeric(scores["churn_probability"], errors="coerce")
    _refuse_rows(
        path, "churn_probability", probability.isna() | ~probability.between(0, 1),
        "a probability in [0, 1]",
    )  # fmt: skip
    clv = pd.to_numeric(scores["clv"], errors="coerce")
    finite = pd.Series(np.isfinite(clv.to_numpy(dtype=float)), index=clv.index)
    _refuse_rows(path, "clv", ~finite, "a finite number")
    _refuse_rows(
        path, "churn_risk", ~scores["churn_risk"].isin(RISK_BANDS), "low, medium, high or prospect"
    )
    _refuse_rows(path, "stage", ~scores["stage"].isin(STAGES), f"a stage ({', '.join(STAGES)})")
    if actions is not None:
        _refuse_rows(
            path, "action", ~scores["action"].isin(actions),
            f"an action of decision.actions ({', '.join(actions)})",
        )  # fmt: skip
    if "action_value" in scores.columns:
        value = pd.to_numeric(scores["action_value"], errors="coerce").to_numpy(dtype=float)
        _refuse_rows(path, "action_value", pd.Series(~np.isfinite(value)), "a finite number")
        scores["action_value"] = value
    duplicated = ids.duplicated()
    if duplicated.any():
        first = ids[duplicated].iloc[0]
        raise DataError(f"--scores {path}: customer_id {first!r} appears more than once")
    scores["customer_id"] = ids.astype(str)
    scores["churn_probability"], scores["clv"] = probability, clv
    scores.attrs["as_of"] = scored_as_of
    return scores


def _btyd_clv(snapshot: pd.DataFrame, settings: ClmSettings) -> np.ndarray:
    """BG/NBD x Gamma-Gamma discounted margin over the CLV horizon, buyers only (NaN else)."""
    from training.models.history import BtydModel

    model = BtydModel(
        margin=settings.training.margin,
        annual_discount_rate=settings.training.annual_discount_rate,
    )
    horizon = settings.labels.clv_horizon_days
    buyer = snapshot["days_since_first_purchase"].notna().to_numpy()
    if buyer.sum() < 10:
        return np.full(len(snapshot), np.nan)
    model.fit(snapshot, np.zeros(len(snapshot)), label_horizon_days=horizon)
    return np.where(buyer, model.clv(snapshot, horizon), np.nan)


def _estimated_clv(snapshot: pd.DataFrame, settings: ClmSettings, notes: list[str]) -> np.ndarray:
    """BG/NBD x Gamma-Gamma CLV, or all missing (with a note) when it cannot be fitted."""
    try:
        clv = _btyd_clv(snapshot, settings)
    except (RuntimeError, ValueError, FloatingPointError) as exc:
        notes.append(f"BG/NBD x Gamma-Gamma could not be fitted here ({exc}); pass --scores")
        return np.full(len(snapshot), np.nan)
    if not np.isfinite(clv).any():
        notes.append("too few buyers for a BG/NBD x Gamma-Gamma CLV; pass --scores")
    return clv


def _score_sections(report: Report, scores: pd.DataFrame, settings: ClmSettings, top: int) -> None:
    risk = pd.crosstab(scores["stage"], scores["churn_risk"]).reindex(
        index=[s for s in STAGES if s in set(scores["stage"])], columns=RISK_BANDS
    )
    report.risk_by_stage = risk.fillna(0).astype(int)
    value = scores.get("action_value", pd.Series(0.0, index=scores.index)).astype(float)
    by_action: pd.DataFrame = (
        pd.DataFrame({"action": scores["action"], "value": value})
        .groupby("action")
        .agg(
            customers=("value", "size"),
            expected_value=("value", "sum"),
            mean_value=("value", "mean"),
        )
        .sort_values("expected_value", ascending=False)
    )
    report.value_by_action = by_action.reset_index()
    # A score file from before the prospect band says "high" for some people who never bought.
    at_risk = scores[(scores["churn_risk"] == "high") & ~scores["stage"].isin(PROSPECT_STAGES)]
    keep = [
        c
        for c in ("customer_id", "stage", "churn_probability", "clv", "action", "action_value")
        if c in scores.columns
    ]
    report.top_at_risk = at_risk.sort_values("clv", ascending=False)[keep].head(top)


def build_report(
    dataset: Dataset,
    *,
    as_of: date,
    settings: ClmSettings,
    source: str,
    scores: pd.DataFrame | None = None,
    scores_source: str | None = None,
) -> Report:
    """Every figure of the report for the data as of ``as_of`` (and the scores, if given)."""
    options = settings.report
    snapshot = build_snapshot(dataset, as_of=as_of, settings=settings)
    if snapshot.empty:
        raise DataError(f"{source}: no customer is known before {as_of}; nothing to report")
    boundaries = _month_starts(as_of, options.months)
    transition_start = (
        pd.Timestamp(as_of) - pd.Timedelta(days=settings.labels.stage_horizon_days)
    ).date()
    history = _stage_history(dataset, sorted({*boundaries, transition_start}), settings)
    stage = snapshot.set_index("customer_id")["stage"]
    channels = _channel_inputs(dataset, as_of, options.channel_attribute)
    snapshot["channel"] = _channel_at(channels, as_of, pd.Index(snapshot["customer_id"])).to_numpy()

    notes: list[str] = []
    if scores is not None:
        clv = (
            snapshot[["customer_id"]]
            .merge(scores[["customer_id", "clv"]], on="customer_id", how="left")["clv"]
            .to_numpy(dtype=float)
        )
        clv_source = f"champion CLV model ({scores_source})"
        if scores.attrs.get("as_of") is None:
            notes.append(
                f"{scores_source} does not record the cutoff it was scored at (clm score "
                f"records it in Parquet files): make sure it was scored as of {as_of}"
            )
        unknown = ~scores["customer_id"].isin(snapshot["customer_id"])
        if unknown.any():
            shown = ", ".join(scores.loc[unknown, "customer_id"].head(3))
            notes.append(
                f"{int(unknown.sum()):,} customer(s) in {scores_source} are not known in the "
                f"data at {as_of} (new customers scored from a list, or another data set; "
                f"{shown}, ...): counted in the score sections only"
            )
        unscored = int(np.isnan(clv).sum())
        if unscored:
            notes.append(
                f"{unscored:,} customer(s) known at {as_of} are not in {scores_source}; "
                "they are left out of the CLV figures"
            )
    else:
        clv = _estimated_clv(snapshot, settings, notes)
        clv_source = (
            "BG/NBD x Gamma-Gamma fitted at the cutoff (buyers; pass --scores for the champion)"
        )
    customers = pd.DataFrame(
        {
            "customer_id": snapshot["customer_id"],
            "stage": snapshot["stage"],
            "channel": snapshot["channel"],
            "clv": clv,
            "days_since_last_purchase": snapshot["days_since_last_purchase"],
            "purchase_days": snapshot["purchase_days"],
            "spend_365d": snapshot["spend_365d"],
        }
    )
    buyers = customers["days_since_last_purchase"].notna()
    customers["rfm_segment"] = pd.Series(pd.NA, index=customers.index, dtype="object")
    customers.loc[buyers, "rfm_segment"] = rfm_segments(
        customers.loc[buyers, "days_since_last_purchase"], customers.loc[buyers, "purchase_days"]
    )

    counts = stage.value_counts().reindex(STAGES, fill_value=0)
    # How far each customer has come: churned buyers count as purchase or retention.
    reached_rank = snapshot["stage"].map(_RANK).to_numpy(dtype=float)
    repeat = snapshot["purchase_days"].fillna(0).to_numpy() >= 2
    reached_rank[(snapshot["stage"] == "churned").to_numpy() & repeat] = _RANK["retention"]
    funnel = pd.DataFrame(
        {
            "stage": FUNNEL,
            "reached": [int((reached_rank >= _RANK[s]).sum()) for s in FUNNEL],
            "now": [int(counts[s]) for s in FUNNEL],
        }
    )
    stage_counts = pd.DataFrame(
        {
            "stage": STAGES,
            "customers": counts.to_numpy(),
            "share": (counts / counts.sum()).to_numpy(),
        }
    )
    step = options.period_months
    period_bounds = boundaries[::-1][::step][::-1]
    conversion = _conversion(history, channels, period_bounds[:-1], period_bounds[1:])
    churn_by_month = _churn_by_month(history, boundaries)
    retention, cohort_churn = _cohorts(
        dataset,
        stage,
        as_of,
        options.cohort_quarters,
        options.months,
        settings.stages.lead_event_types,
    )
    nps, nps_by_month = _nps(dataset, as_of, settings.stages.nps_event_types, boundaries)
    referrals_by_month, referrals_by_stage = _referrals(
        dataset, as_of, settings.features.referral_event_types, boundaries, stage
    )
    active = int(counts[list(_BUYING)].sum())
    kpis = {
        "customers": float(len(snapshot)),
        "buyers": float(buyers.sum()),
        "active_buyers": float(active),
        "churned": float(counts["churned"]),
        "churn_rate_last_month": float(churn_by_month["rate"].iloc[-1]),
        "nps": nps["nps"],
        "clv_total": float(np.nansum(clv)) if np.isfinite(clv).any() else float("nan"),
        "spend_365d": float(snapshot["spend_365d"].sum()),
    }
    report = Report(
        as_of=as_of,
        source=source,
        kpis=kpis,
        customers=customers,
        stage_counts=stage_counts,
        funnel=funnel,
        channel_source=_channel_source(channels, options.channel_attribute),
        conversion=conversion,
        churn_by_month=churn_by_month,
        cohort_retention=retention,
        cohort_churn=cohort_churn,
        transitions=_transitions(history, transition_start, as_of),
        transition_days=settings.labels.stage_horizon_days,
        clv_source=clv_source,
        rfm=_rfm(customers),
        nps=nps,
        nps_by_month=nps_by_month,
        referrals_by_month=referrals_by_month,
        referrals_by_stage=referrals_by_stage,
        notes=notes,
    )
    if scores is not None:
        report.scores_source = scores_source
        _score_sections(report, scores, settings, options.top_customers)
    return report
