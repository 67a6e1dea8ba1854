"""One self-contained HTML page from a :class:`~reporting.metrics.Report`.

Charts are Plotly figures (interactive: hover for the numbers, click a legend entry to hide a
series) with plotly.js inlined once in the page, so the file opens without a network. Every
chart has a one-line caption saying how to read it; the key numbers are also in plain tables
and in a JSON block (``<script id="report-data">``) for programs.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from features.stages import STAGES
from reporting.metrics import FUNNEL, RISK_BANDS, Report

__all__ = ["Chart", "charts", "number", "percent", "render"]

STAGE_COLOURS = {
    "awareness": "#9ecae1",
    "consideration": "#6baed6",
    "purchase": "#4292c6",
    "retention": "#2171b5",
    "advocacy": "#08519c",
    "churned": "#de2d26",
}
MIN_BASE = 20  # customers a conversion rate needs before the channel heatmap shows it
NPS_COLOURS = {"detractors": "#de2d26", "passives": "#bdbdbd", "promoters": "#31a354"}
RISK_COLOURS = {"low": "#74c476", "medium": "#fd8d3c", "high": "#de2d26", "prospect": "#9e9ac8"}

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0;
       color: #1d2733; background: #f6f8fa; }
header { background: #0b3954; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: .85; }
nav { padding: 8px 32px; background: #e8eef3; position: sticky; top: 0; z-index: 10; }
nav a { margin-right: 18px; color: #0b3954; text-decoration: none; font-weight: 600; }
main { padding: 8px 32px 40px 32px; max-width: 1400px; }
section { margin-top: 18px; }
h2 { border-bottom: 2px solid #0b3954; padding-bottom: 4px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }
.kpi { background: white; border-radius: 8px; padding: 12px 18px; min-width: 150px;
       box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.kpi .value { font-size: 26px; font-weight: 700; }
.kpi .label { font-size: 13px; color: #5a6b7b; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
figure { background: white; margin: 0; padding: 8px; border-radius: 8px;
         box-shadow: 0 1px 3px rgba(0,0,0,.12); }
figcaption { font-size: 13px; color: #3d4d5c; padding: 4px 8px 8px 8px; }
figcaption b { color: #1d2733; }
table { border-collapse: collapse; font-size: 13px; background: white; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e1e6eb; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 6px 12px; }
"""


def number(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def percent(value: float, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.{digits}f}%"


@dataclass
class Chart:
    """One figure of the report with its title and one-line caption."""

    figure: go.Figure
    id: str
    title: str
    caption: str
    height: int = 380

    def __post_init__(self) -> None:
        self.figure.update_layout(
            template="plotly_white",
            height=self.height,
            margin={"l": 60, "r": 20, "t": 40, "b": 50},
            title={"text": self.title, "x": 0.01, "font": {"size": 15}},
            legend={"orientation": "h", "y": -0.18},
        )

    def html(self) -> str:
        body = self.figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=self.id,
            config={"displaylogo": False, "responsive": True},
        )
        return (
            f'<figure class="chart" data-chart="{self.id}">{body}'
            f"<figcaption><b>How to read it:</b> {html.escape(self.caption)}</figcaption></figure>"
        )


Part = str | Chart


def _table(frame: pd.DataFrame, table_id: str, formats: dict[str, Any] | None = None) -> str:
    formats = formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            shown = formats[column](value) if column in formats else value
            cells.append(f"<td>{html.escape(str(shown))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    body = "".join(rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _bar(
    x: Any,
    y: Any,
    colour: Any,
    axis: str,
    hover: str | None = None,
    extra: tuple[Any, ...] = (),
    tickformat: str | None = None,
) -> go.Figure:
    """One bar series; ``hover`` may name ``%{customdata[i]}`` for the ``extra`` columns."""
    bar = go.Bar(
        x=list(x),
        y=y,
        customdata=np.stack(extra, axis=1) if extra else None,
        hovertemplate=f"{hover}<extra></extra>" if hover else None,
        marker_color=colour,
    )
    figure = go.Figure(bar)
    figure.update_yaxes(title=axis, tickformat=tickformat)
    return figure


def _kpis(report: Report) -> str:
    k = report.kpis
    tiles = [
        ("customers", number(k["customers"]), "customers known"),
        (
            "active_buyers",
            number(k["active_buyers"]),
            "active buyers (purchase, retention, advocacy)",
        ),
        ("churned", number(k["churned"]), "churned"),
        (
            "churn_rate_last_month",
            percent(k["churn_rate_last_month"]),
            "churned last month (of active buyers)",
        ),
        ("nps", number(k["nps"], 1), "NPS, last 365 days"),
        ("clv_total", number(k["clv_total"]), "total CLV (discounted margin, CLV horizon)"),
        ("spend_365d", number(k["spend_365d"]), "spend, last 365 days"),
    ]
    return (
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi" data-kpi="{key}"><div class="value">{value}</div>'
            f'<div class="label">{html.escape(label)}</div></div>'
            for key, value, label in tiles
        )
        + "</div>"
    )


def _funnel_section(report: Report) -> list[Part]:
    reached = report.funnel
    funnel = go.Figure(
        go.Funnel(
            y=list(reached["stage"]),
            x=reached["reached"],
            customdata=reached["now"],
            texttemplate="%{value:,}<br>%{percentInitial:.0%}",
            hovertemplate="%{y}: %{x:,} reached it, %{customdata:,} in it today<extra></extra>",
            marker={"color": [STAGE_COLOURS[s] for s in reached["stage"]]},
        )
    )
    conv = report.conversion
    overall = conv[conv["channel"] == "all"]
    rates = go.Figure(
        [
            go.Scatter(
                x=part["period"],
                y=part["rate"],
                mode="lines+markers",
                name=f"{stage} -> {part['to_stage'].iloc[0]}",
            )
            for stage, part in overall.groupby("from_stage", sort=False)
        ]
    )
    rates.update_yaxes(tickformat=".0%", title="converted in the period")
    latest = conv[(conv["period"] == conv["period"].iloc[-1]) & (conv["channel"] != "all")]
    # An acquisition-channel attribute is known once a customer signs up: its rows start at
    # consideration (prospects before signup only have a first-touch channel).
    steps = list(FUNNEL[:-1]) if report.channel_source == "first touch" else list(FUNNEL[1:-1])
    latest = latest[latest["from_stage"].isin(steps)]
    grid = latest.pivot(index="channel", columns="from_stage", values="rate").reindex(columns=steps)
    sizes = latest.pivot(index="channel", columns="from_stage", values="customers").reindex(
        columns=steps
    )
    shown = (sizes >= MIN_BASE).any(axis=1)  # channels with a base somewhere
    grid, sizes = grid[shown], sizes[shown]
    by_channel = go.Figure(
        go.Heatmap(
            z=grid.where(sizes >= MIN_BASE).to_numpy(dtype=float),
            x=[f"{s} -> {FUNNEL[FUNNEL.index(s) + 1]}" for s in steps],
            y=list(grid.index),
            customdata=sizes.to_numpy(dtype=float),
            colorscale="Blues",
            texttemplate="%{z:.1%}",
            hovertemplate="%{y}: %{x}<br>%{z:.1%} of %{customdata:,.0f}<extra></extra>",
        )
    )
    stage_channel = pd.crosstab(report.customers["channel"], report.customers["stage"]).reindex(
        columns=list(STAGES), fill_value=0
    )
    stacked = go.Figure(
        [
            go.Bar(
                x=list(stage_channel.index),
                y=stage_channel[s],
                name=s,
                marker_color=STAGE_COLOURS[s],
            )
            for s in STAGES
        ]
    )
    stacked.update_layout(barmode="stack")
    table = _table(
        report.stage_counts,
        "stage-counts",
        {"customers": lambda v: f"{v:,}", "share": percent},
    )
    period = conv["period"].iloc[-1]
    if report.channel_source == "first touch":
        channel_name, channel_note = "first-touch channel", "the channel of the first event"
    else:
        channel_name = "acquisition channel"
        channel_note = (
            f"the customer attribute {report.channel_source}, known once a customer signs up, "
            "so the steps start at consideration"
        )
    return [
        '<section id="funnel"><h2>Funnel</h2><div class="grid">',
        Chart(
            funnel,
            "chart-funnel",
            f"How far customers have come, on {report.as_of}",
            "each bar counts the customers who reached at least that stage (churned buyers "
            "count by their purchases); the percentage is of all customers known; hover for "
            "how many are in the stage today.",
        ),
        Chart(
            rates,
            "chart-conversion",
            "Stage-to-stage conversion per period",
            "of the customers in a stage at a period's start, the share further along the "
            "funnel at its end; a falling line means fewer customers move on.",
        ),
        Chart(
            by_channel,
            "chart-conversion-channel",
            f"Conversion by {channel_name}, {period}",
            f"rows are channels ({channel_note}), columns the step; darker cells convert "
            f"better; blank: fewer than {MIN_BASE} customers to start from.",
        ),
        Chart(
            stacked,
            "chart-stage-channel",
            "Stages by acquisition channel today",
            "each bar is one channel's customers split by stage: channels whose bars are "
            "mostly retention and advocacy bring lasting customers.",
        ),
        f"</div><h3>Stage counts on {report.as_of}</h3>{table}</section>",
    ]


def _churn_section(report: Report) -> list[Part]:
    monthly = report.churn_by_month
    churn = _bar(
        monthly["month"],
        monthly["rate"],
        STAGE_COLOURS["churned"],
        "churned in the month",
        "%{x}: %{y:.1%} (%{customdata[0]:,} of %{customdata[1]:,})",
        (monthly["churned"], monthly["active_buyers"]),
        tickformat=".1%",
    )
    retention = report.cohort_retention
    curves = go.Figure(
        [
            go.Scatter(
                x=part["months_since_signup"],
                y=part["share"],
                mode="lines+markers",
                name=f"{cohort} (n={int(part['size'].iloc[0]):,})",
            )
            for cohort, part in retention.groupby("cohort")
        ]
    )
    curves.update_xaxes(title="months since signup", dtick=1)
    curves.update_yaxes(tickformat=".0%", title="bought in the month")
    cohort = report.cohort_churn
    by_cohort = _bar(
        cohort["cohort"],
        cohort["rate"],
        "#fb6a4a",
        "churned today, of the cohort's buyers",
        "%{x}: %{y:.1%} (%{customdata[0]:,} of %{customdata[1]:,} buyers)",
        (cohort["churned"], cohort["buyers"]),
        tickformat=".0%",
    )
    matrix = report.transitions
    transitions = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(dtype=float),
            x=list(matrix.columns),
            y=list(matrix.index),
            colorscale="Blues",
            texttemplate="%{z:.0%}",
            hovertemplate="from %{y} to %{x}: %{z:.1%}<extra></extra>",
        )
    )
    transitions.update_yaxes(autorange="reversed", title="stage before")
    transitions.update_xaxes(title="stage now")
    return [
        '<section id="churn"><h2>Churn</h2><div class="grid">',
        Chart(
            churn,
            "chart-churn-month",
            "Churn rate by month",
            "of the buyers not churned at a month's start, the share churned at its end "
            "(no purchase in the inactivity window, or a cancel).",
        ),
        Chart(
            curves,
            "chart-cohort-retention",
            "Cohort retention curves (signup quarter)",
            "one line per signup quarter (signup date, else first lead signal or purchase): "
            "the share of its customers who bought in each month since signup; higher and "
            "flatter lines are cohorts that stay.",
        ),
        Chart(
            by_cohort,
            "chart-cohort-churn",
            "Churn rate by signup cohort",
            "of each cohort's buyers, the share churned today; older cohorts have had more "
            "time to churn, so compare neighbours.",
        ),
        Chart(
            transitions,
            "chart-transitions",
            f"Stage transitions over the last {report.transition_days} days",
            "each row is a stage at the start and sums to 100%: the diagonal is who stayed, "
            "the churned column who was lost.",
        ),
        "</div></section>",
    ]


def _value_section(report: Report) -> list[Part]:
    customers = report.customers[report.customers["clv"].notna()]
    clv = customers["clv"]
    top = float(np.nanpercentile(clv, 99)) if len(clv) else 0.0
    histogram = go.Figure(go.Histogram(x=clv.clip(upper=top), nbinsx=50, marker_color="#2171b5"))
    histogram.update_xaxes(title="CLV (clipped at the 99th percentile)")
    histogram.update_yaxes(title="customers")
    by_stage = customers.groupby("stage")["clv"].agg(["mean", "sum", "size"])
    by_stage = by_stage.reindex([s for s in STAGES if s in by_stage.index])
    stage_bar = _bar(
        by_stage.index,
        by_stage["mean"],
        [STAGE_COLOURS[s] for s in by_stage.index],
        "mean CLV",
        "%{x}: mean %{y:,.0f}, total %{customdata[0]:,.0f} (%{customdata[1]:,} customers)",
        (by_stage["sum"], by_stage["size"]),
    )
    by_channel = customers.groupby("channel")["clv"].agg(["mean", "sum", "size"])
    by_channel = by_channel.sort_values("sum", ascending=False)
    channel_bar = _bar(
        by_channel.index,
        by_channel["sum"],
        "#6baed6",
        "total CLV",
        "%{x}: total %{y:,.0f}, mean %{customdata[0]:,.0f} (%{customdata[1]:,} customers)",
        (by_channel["mean"], by_channel["size"]),
    )
    rfm = report.rfm
    segments = go.Figure(
        go.Bar(
            x=rfm["segment"],
            y=rfm["customers"],
            customdata=np.stack([rfm["clv"], rfm["spend_365d"]], axis=1),
            hovertemplate="%{x}: %{y:,} customers, mean CLV %{customdata[0]:,.0f}, "
            "spend 365 d %{customdata[1]:,.0f}<extra></extra>",
            marker={
                "color": rfm["clv"],
                "colorscale": "Blues",
                "showscale": True,
                "colorbar": {"title": "mean CLV"},
            },
        )
    )
    segments.update_yaxes(title="customers")
    table = _table(
        rfm[["segment", "customers", "share", "recency", "frequency", "spend_365d", "clv"]],
        "rfm-segments",
        {
            "customers": lambda v: f"{v:,}",
            "share": percent,
            "recency": lambda v: number(v, 0),
            "frequency": lambda v: number(v, 1),
            "spend_365d": lambda v: number(v, 0),
            "clv": lambda v: number(v, 0),
        },
    )
    return [
        f'<section id="value"><h2>Value</h2><p>CLV: {html.escape(report.clv_source)}.</p>',
        '<div class="grid">',
        Chart(
            histogram,
            "chart-clv-distribution",
            "CLV distribution",
            "customers per CLV band: a long right tail means a few customers hold much of "
            "the value.",
        ),
        Chart(
            stage_bar,
            "chart-clv-stage",
            "Mean CLV by stage",
            "the value of a typical customer in each stage; hover for the stage's total.",
        ),
        Chart(
            channel_bar,
            "chart-clv-channel",
            "Total CLV by acquisition channel",
            "where future value comes from; hover for the mean per customer, which says "
            "which channel brings the best customers.",
        ),
        Chart(
            segments,
            "chart-rfm",
            "RFM segments",
            "buyers by recency and frequency quintiles (champions: bought lately and often; "
            "at risk: used to buy often, not lately); colour is the mean CLV.",
        ),
        "</div><h3>RFM segments</h3>",
        "<p>R and F scores 1-5 by quintile; recency in days since the last purchase, "
        "frequency in purchase days, spend over the last 365 days.</p>",
        table,
        "</section>",
    ]


def _satisfaction_section(report: Report) -> list[Part]:
    nps = report.nps
    split = go.Figure(
        [
            go.Bar(y=["last 365 days"], x=[nps[k]], name=k, orientation="h", marker_color=c)
            for k, c in NPS_COLOURS.items()
        ]
    )
    split.update_layout(barmode="stack")
    split.update_xaxes(tickformat=".0%")
    monthly = report.nps_by_month
    over_time = go.Figure(
        go.Scatter(
            x=monthly["month"],
            y=monthly["nps"],
            mode="lines+markers",
            customdata=monthly["responses"],
            hovertemplate="%{x}: NPS %{y:.1f} (%{customdata:,} answers)<extra></extra>",
        )
    )
    over_time.update_yaxes(title="NPS (-100 to 100)")
    referrals = report.referrals_by_month
    referral_bar = go.Figure(
        [
            go.Bar(x=referrals["month"], y=referrals["referrals"], name="referrals"),
            go.Bar(x=referrals["month"], y=referrals["referrers"], name="customers referring"),
        ]
    )
    by_stage = report.referrals_by_stage
    referrer_share = _bar(
        by_stage["stage"],
        by_stage["share"],
        [STAGE_COLOURS[s] for s in by_stage["stage"]],
        "referred in the last 365 days",
        tickformat=".0%",
    )
    return [
        '<section id="satisfaction"><h2>Satisfaction and advocacy</h2>',
        f'<p data-nps="{nps["nps"]:.4f}">NPS over the last 365 days: '
        f"<b>{number(nps['nps'], 1)}</b> from {number(nps['responses'])} answers "
        f"({percent(nps['promoters'])} promoters, {percent(nps['passives'])} passives, "
        f"{percent(nps['detractors'])} detractors).</p>",
        '<div class="grid">',
        Chart(
            split,
            "chart-nps-split",
            "Promoters, passives, detractors",
            "answers 9-10 are promoters, 7-8 passives, 0-6 detractors; NPS is the "
            "promoters' share minus the detractors'.",
            height=220,
        ),
        Chart(
            over_time,
            "chart-nps-month",
            "NPS by month",
            "the score of each month's answers; hover for how many answered (few answers, "
            "noisy score).",
        ),
        Chart(
            referral_bar,
            "chart-referrals",
            "Referrals by month",
            "referral events and the customers behind them; a gap between the bars means "
            "some advocates refer many times.",
        ),
        Chart(
            referrer_share,
            "chart-referrers-stage",
            "Who refers, by stage",
            "the share of each stage's customers who referred someone in the last year.",
        ),
        "</div></section>",
    ]


def _scores_section(report: Report) -> list[Part]:
    if report.risk_by_stage is None or report.value_by_action is None:
        return []
    risk = report.risk_by_stage
    bands = go.Figure(
        [
            go.Bar(x=list(risk.index), y=risk[b], name=b, marker_color=RISK_COLOURS[b])
            for b in RISK_BANDS
        ]
    )
    bands.update_layout(barmode="stack")
    actions = report.value_by_action
    action_bar = _bar(
        actions["action"],
        actions["expected_value"],
        "#31a354",
        "expected value",
        "%{x}: %{y:,.0f} in all, %{customdata[0]:,} customers, %{customdata[1]:,.1f} each",
        (actions["customers"], actions["mean_value"]),
    )
    top = report.top_at_risk if report.top_at_risk is not None else pd.DataFrame()
    money = {"clv": lambda v: number(v, 0), "action_value": lambda v: number(v, 1)}
    table = _table(top, "top-at-risk", {"churn_probability": percent, **money})
    return [
        '<section id="scores"><h2>Scores</h2>',
        f"<p>From {html.escape(str(report.scores_source))}.</p>",
        '<div class="grid">',
        Chart(
            bands,
            "chart-risk-stage",
            "Churn risk bands by stage",
            "each bar is a stage split into low, medium and high churn risk (thresholds in "
            "serving.risk_medium / risk_high); people who have not bought yet are prospects.",
        ),
        Chart(
            action_bar,
            "chart-action-value",
            "Expected value by action",
            "the sum over customers of (chance the action works x value at stake - cost) "
            "for the action chosen for them.",
        ),
        "</div><h3>Top at-risk, high-value customers</h3>",
        "<p>High churn risk, highest CLV first: the first calls to make.</p>",
        table,
        "</section>",
    ]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _data_block(report: Report) -> str:
    data = {
        "as_of": str(report.as_of),
        "kpis": {k: _json_safe(float(v)) for k, v in report.kpis.items()},
        "stage_counts": {
            str(stage): int(n)
            for stage, n in zip(
                report.stage_counts["stage"], report.stage_counts["customers"], strict=True
            )
        },
        "nps": {k: _json_safe(float(v)) for k, v in report.nps.items()},
        "rfm_segments": dict(
            zip(report.rfm["segment"], map(int, report.rfm["customers"]), strict=True)
        ),
    }
    text = json.dumps(data).replace("</", "<\\/")
    return f'<script type="application/json" id="report-data">{text}</script>'


def _nav(sections: Iterable[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#{i}">{html.escape(t)}</a>' for i, t in sections) + "</nav>"


def _sections(report: Report) -> list[list[Part]]:
    return [
        _funnel_section(report),
        _churn_section(report),
        _value_section(report),
        _satisfaction_section(report),
        _scores_section(report),
    ]


def charts(report: Report) -> dict[str, Chart]:
    """Every chart of the page by id (``chart-funnel``, ``chart-churn-month``, ...), e.g. to
    show one in a notebook: ``charts(report)["chart-funnel"].figure``."""
    return {p.id: p for parts in _sections(report) for p in parts if isinstance(p, Chart)}


def render(report: Report) -> str:
    """The whole page as one string (plotly.js inlined: about 5 MB)."""
    sections = [("funnel", "Funnel"), ("churn", "Churn"), ("value", "Value")]
    sections.append(("satisfaction", "Satisfaction and advocacy"))
    if report.risk_by_stage is not None:
        sections.append(("scores", "Scores"))
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)
    body = "".join(
        p if isinstance(p, str) else p.html() for parts in _sections(report) for p in parts
    )
    return "".join(
        [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>Customer lifecycle report, {report.as_of}</title>",
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>",
            f"<header><h1>Customer lifecycle report</h1><p>{html.escape(report.source)}, "
            f"as of {report.as_of} (rows before this day)</p></header>",
            _nav(sections),
            "<main>",
            notes,
            _kpis(report),
            body,
            _data_block(report),
            "</main></body></html>",
        ]
    )
