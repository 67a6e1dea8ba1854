"""The report's figures on hand-made logs, where every number can be worked out by hand."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from clm.errors import DataError
from clm.settings import ClmSettings
from features.sources import load
from reporting.metrics import build_report, read_scores, rfm_segments
from tests.helpers import ev, tx, write_tables

AS_OF = date(2025, 7, 1)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = write_tables(
        tmp_path_factory.mktemp("logs"),
        transactions=[
            tx("A", "2025-05-20", 30.0),
            tx("C", "2024-10-01", 50.0),
            tx("C", "2024-11-01", 50.0),
            tx("D", "2025-01-10", 20.0),
            tx("D", "2025-02-10", 20.0),
            tx("D", "2025-03-10", 20.0),
            tx("E", "2025-06-01", 15.0),
            tx("F", "2025-06-02", 15.0),
            tx("G", "2025-06-03", 15.0),
        ],
        events=[
            ev("A", "2025-03-10", "visit"),
            ev("A", "2025-04-15", "signup"),
            ev("B", "2025-03-05", "visit"),
            ev("D", "2025-06-10", "nps", 10),
            ev("E", "2025-06-20", "nps", 3),
            ev("F", "2025-06-21", "nps", 8),
            ev("G", "2025-06-22", "nps", 9),
            ev("G", "2025-06-23", "referral"),
            ev("H", "2024-06-10", "nps", 0),  # more than 365 days before the cutoff
        ],
    )
    settings = ClmSettings()
    settings.report.months = 3
    settings.report.period_months = 1
    dataset = load(folder)
    return build_report(dataset, as_of=AS_OF, settings=settings, source=str(folder))


def test_stage_counts_and_kpis(report) -> None:  # type: ignore[no-untyped-def]
    counts = report.stage_counts.set_index("stage")["customers"].to_dict()
    # A bought once in May; B and H only visited or answered; C lapsed (no purchase for 180
    # days); D repeat buyer with a promoter answer; E, F, G one purchase each.
    assert counts == {
        "awareness": 2,
        "consideration": 0,
        "purchase": 4,
        "retention": 0,
        "advocacy": 1,
        "churned": 1,
    }
    assert report.kpis["customers"] == 8
    assert report.kpis["active_buyers"] == 5


def test_churn_by_month(report) -> None:  # type: ignore[no-untyped-def]
    months = report.churn_by_month.set_index("month")
    # April: C and D were active buyers on 1 April; C passed 180 days without a purchase.
    assert months.loc["2025-04", "active_buyers"] == 2
    assert months.loc["2025-04", "churned"] == 1
    assert months.loc["2025-04", "rate"] == pytest.approx(0.5)
    assert months.loc["2025-05", "rate"] == 0.0
    assert report.kpis["churn_rate_last_month"] == months.loc["2025-06", "rate"]


def test_funnel_conversion_per_period(report) -> None:  # type: ignore[no-untyped-def]
    every = report.conversion[report.conversion["channel"] == "all"].set_index(
        ["period", "from_stage"]
    )
    april = every.loc[("2025-04-01 to 2025-05-01", "awareness")]
    assert (april["customers"], april["converted"]) == (3, 1)  # A signed up, B and H did not
    may = every.loc[("2025-05-01 to 2025-06-01", "consideration")]
    assert (may["customers"], may["converted"], may["rate"]) == (1, 1, 1.0)  # A bought
    june = every.loc[("2025-06-01 to 2025-07-01", "retention")]
    assert (june["customers"], june["converted"]) == (1, 1)  # D became an advocate
    assert pd.isna(every.loc[("2025-06-01 to 2025-07-01", "consideration"), "rate"])


def test_cohorts(report) -> None:  # type: ignore[no-untyped-def]
    q1 = report.cohort_retention[report.cohort_retention["cohort"] == "2025Q1"]
    # A, B (first seen in March) and D (January); curves run report.months (3) months.
    assert q1["size"].unique().tolist() == [3]
    assert q1["months_since_signup"].tolist() == [0, 1, 2]
    assert q1["active"].tolist() == [1, 1, 2]  # D in Jan, Feb, Mar; A in May (month 2)
    # E, F, G (first seen in June, the 2025Q2 cohort): only June is complete; all three bought.
    q2 = report.cohort_retention[report.cohort_retention["cohort"] == "2025Q2"]
    assert q2[["months_since_signup", "active", "share"]].values.tolist() == [[0, 3, 1.0]]
    churn = report.cohort_churn.set_index("cohort")
    assert churn.loc["2024Q4", "buyers"] == 1 and churn.loc["2024Q4", "rate"] == 1.0


def test_nps_and_referrals(report) -> None:  # type: ignore[no-untyped-def]
    # Answers within 365 days: 10 and 9 promoters, 8 passive, 3 detractor.
    assert report.nps["responses"] == 4
    assert report.nps["nps"] == pytest.approx(100 * (2 / 4 - 1 / 4))
    june = report.nps_by_month.set_index("month").loc["2025-06"]
    assert june["responses"] == 4
    referrals = report.referrals_by_month.set_index("month")
    assert referrals.loc["2025-06", "referrals"] == 1
    by_stage = report.referrals_by_stage.set_index("stage")
    assert by_stage.loc["purchase", "referrers"] == 1


def test_rfm_segments_follow_the_grid() -> None:
    recency = pd.Series([1, 300, 200, 100, 50])
    frequency = pd.Series([10, 9, 1, 2, 3])
    # R scores 5, 1, 2, 3, 4; F scores 5, 4, 1, 2, 3.
    assert rfm_segments(recency, frequency).tolist() == [
        "champions",
        "at risk",
        "hibernating",
        "about to sleep",
        "potential loyalists",
    ]


def test_scores_file_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_scores(tmp_path / "missing.parquet")
    partial = tmp_path / "scores.csv"
    pd.DataFrame({"customer_id": ["A"], "stage": ["purchase"]}).to_csv(partial, index=False)
    with pytest.raises(DataError, match=r"missing column.*churn_probability.*clm score"):
        read_scores(partial)
    bad = tmp_path / "bad.csv"
    pd.DataFrame(
        {
            "customer_id": ["A", "B", "C"],
            "stage": ["purchase"] * 3,
            "churn_probability": [0.2, 1.5, "x"],
            "churn_risk": ["low"] * 3,
            "clv": [1.0, 2.0, 3.0],
            "action": ["none"] * 3,
        }
    ).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"'churn_probability': 2 value\(s\).*row\(s\) 2, 3"):
        read_scores(bad)
