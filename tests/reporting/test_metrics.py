"""The report's figures on hand-made logs, where every number can be worked out by hand."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
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
    # Signup = signup date, else the first lead signal (A's signup event in April), else the
    # first purchase (C in October, D in January, E, F, G in June); B and H only visited or
    # answered a survey: no cohort.
    sizes = report.cohort_retention.groupby("cohort")["size"].first().to_dict()
    assert sizes == {"2024Q4": 1, "2025Q1": 1, "2025Q2": 4}
    q1 = report.cohort_retention[report.cohort_retention["cohort"] == "2025Q1"]
    # Curves run report.months (3) months: D bought in each of January, February, March.
    assert q1["months_since_signup"].tolist() == [0, 1, 2]
    assert q1["active"].tolist() == [1, 1, 1]
    # The newest member of 2025Q2 signed up in June: only month 0 is complete for all; E, F, G
    # bought in their signup month, A (signed up in April) did not.
    q2 = report.cohort_retention[report.cohort_retention["cohort"] == "2025Q2"]
    assert q2[["months_since_signup", "active", "share"]].values.tolist() == [[0, 3, 0.75]]
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


def _build(folder: Path, as_of: date, settings: ClmSettings | None = None):  # type: ignore[no-untyped-def]
    return build_report(load(folder), as_of=as_of, settings=settings or ClmSettings(), source="t")


def test_nps_bands(tmp_path: Path) -> None:
    answers = [0, 6, 7, 8, 9, 10]
    folder = write_tables(
        tmp_path / "nps",
        transactions=[tx("A", "2025-01-05", 10.0)],
        events=[ev(f"P{i}", f"2025-06-{i + 1:02d}", "nps", v) for i, v in enumerate(answers)],
    )
    report = _build(folder, date(2025, 7, 15))
    # 0 and 6 detractors, 7 and 8 passives, 9 and 10 promoters.
    assert report.nps["responses"] == 6
    assert report.nps["promoters"] == pytest.approx(2 / 6)
    assert report.nps["passives"] == pytest.approx(2 / 6)
    assert report.nps["detractors"] == pytest.approx(2 / 6)
    assert report.nps["nps"] == pytest.approx(0.0)
    # A cutoff mid-month: the monthly figures are labelled by their dates, not a calendar month.
    months = report.nps_by_month.set_index("month")
    assert months.loc["2025-06-15 to 2025-07-15", "responses"] == 0
    assert months.loc["2025-05-15 to 2025-06-15", "responses"] == 6
    assert report.churn_by_month["month"].iloc[-1] == "2025-06-15 to 2025-07-15"


def test_short_history_and_no_events(tmp_path: Path) -> None:
    folder = write_tables(
        tmp_path / "short",
        transactions=[
            tx("A", "2025-03-01", 10.0),
            tx("A", "2025-04-01", 12.0),
            tx("B", "2025-05-02", 8.0),
        ],
    )
    report = _build(folder, date(2025, 7, 1))  # 12 months of figures, 4 months of data
    every = report.conversion[report.conversion["channel"] == "all"]
    assert every.groupby("period")["customers"].sum().iloc[0] == 0
    assert report.stage_counts.set_index("stage")["customers"].to_dict()["retention"] == 1
    assert report.nps["responses"] == 0 and np.isnan(report.kpis["nps"])
    assert np.isnan(report.kpis["clv_total"])  # three buyers: no BG/NBD fit, and it says so
    assert any("pass --scores" in n for n in report.notes)


def test_period_longer_than_the_months_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"report.period_months \(3\) must not exceed report.months \(2\)"
    ):
        ClmSettings(report={"months": 2, "period_months": 3})  # type: ignore[arg-type]


def test_rfm_one_time_buyers_score_lowest_frequency() -> None:
    # Seven one-time buyers and three repeat buyers: every one-time buyer is F 1.
    recency = pd.Series([5, 20, 40, 60, 90, 120, 400, 3, 10, 300])
    frequency = pd.Series([1, 1, 1, 1, 1, 1, 1, 8, 5, 12])
    segments = rfm_segments(recency, frequency).tolist()
    assert segments[6] == "lost"  # bought once, 400 days ago: not "at risk"
    assert segments[0] == "new"  # bought once, lately
    assert segments[9] == "can't lose"  # bought most often, long ago


def test_rows_after_the_cutoff_change_nothing(tmp_path: Path, report) -> None:  # type: ignore[no-untyped-def]
    base = Path(report.source)
    later = tmp_path / "later"
    later.mkdir()
    for name in ("transactions", "events"):
        frame = pd.read_csv(base / f"{name}.csv")
        extra = (
            [tx("A", "2025-07-01", 99.0), tx("Z", "2025-08-01", 5.0), tx("C", "2025-07-02", 1.0)]
            if name == "transactions"
            else [
                ev("B", "2025-07-01", "signup"),
                ev("E", "2025-07-03", "nps", 0),
                ev("Z", "2025-09-01", "referral"),
            ]
        )
        pd.concat([frame, pd.DataFrame(extra)]).to_csv(later / f"{name}.csv", index=False)
    settings = ClmSettings()
    settings.report.months, settings.report.period_months = 3, 1
    again = build_report(load(later), as_of=AS_OF, settings=settings, source=str(later))
    assert again.kpis == pytest.approx(report.kpis, nan_ok=True)
    for name in ("stage_counts", "conversion", "churn_by_month", "cohort_retention", "cohort_churn",
                 "transitions", "nps_by_month", "referrals_by_month", "referrals_by_stage", "rfm"):  # fmt: skip
        pd.testing.assert_frame_equal(getattr(again, name), getattr(report, name))
    assert again.nps == pytest.approx(report.nps, nan_ok=True)


def _scores(path: Path, **columns: list[object]) -> Path:
    frame = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "stage": ["purchase", "retention"],
            "churn_probability": [0.2, 0.7],
            "churn_risk": ["low", "high"],
            "clv": [10.0, 20.0],
            "action": ["none", "none"],
            **columns,
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_scores_values_are_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'clv': 1 value\(s\) not a finite number: row\(s\) 2"):
        read_scores(_scores(tmp_path / "a.csv", clv=[1.0, "abc"]))
    with pytest.raises(
        DataError, match=r"'churn_risk': 1 value\(s\) not low, medium, high or prospect: row\(s\) 1"
    ):
        read_scores(_scores(tmp_path / "b.csv", churn_risk=["High", "low"]))
    with pytest.raises(DataError, match=r"'stage': 1 value\(s\) not a stage"):
        read_scores(_scores(tmp_path / "c.csv", stage=["purchase", "vip"]))


def test_scores_rows_ids_actions_and_values_are_checked(tmp_path: Path) -> None:
    header = tmp_path / "h.csv"
    header.write_text("customer_id,stage,churn_probability,churn_risk,clv,action\n")
    with pytest.raises(DataError, match=r"h.csv: no rows; expected the output of clm score"):
        read_scores(header)
    with pytest.raises(
        DataError, match=r"'customer_id': 1 value\(s\) not a non-empty .*row\(s\) 2"
    ):
        read_scores(_scores(tmp_path / "a.csv", customer_id=["A", " "]))
    actions = ["win_back", "none"]
    with pytest.raises(
        DataError,
        match=r"'action': 1 value\(s\) not an action of decision.actions \(win_back, none\): row\(s\) 2",
    ):
        read_scores(_scores(tmp_path / "b.csv", action=["none", "winback"]), actions=actions)
    assert read_scores(_scores(tmp_path / "c.csv"), actions=actions)["action"].tolist() == [
        "none",
        "none",
    ]
    with pytest.raises(
        DataError, match=r"'action_value': 1 value\(s\) not a finite number: row\(s\) 1"
    ):
        read_scores(_scores(tmp_path / "d.csv", action_value=["nan", 2.0]))
    # Ids are read as the data's ids are: surrounding spaces trimmed (then unique).
    with pytest.raises(DataError, match="customer_id 'A' appears more than once"):
        read_scores(_scores(tmp_path / "e.csv", customer_id=["A", " A"]))


def test_scores_from_another_cutoff_are_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(_scores(tmp_path / "s.csv"))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(
        table.replace_schema_metadata({b"clm.as_of": b"2025-01-01"}), tmp_path / "s.parquet"
    )
    with pytest.raises(DataError, match="scored as of 2025-01-01, not --as-of 2025-07-01"):
        read_scores(tmp_path / "s.parquet", date(2025, 7, 1))
    assert read_scores(tmp_path / "s.parquet", date(2025, 1, 1)).attrs["as_of"] == "2025-01-01"


def test_scores_in_a_folder_partitioned_by_stage_are_read_with_their_cutoff(
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(_scores(tmp_path / "s.csv"), dtype={"customer_id": "string"})
    folder = tmp_path / "spark.parquet"  # as clm score --engine spark writes it
    pq.write_to_dataset(pa.Table.from_pandas(frame), folder, partition_cols=["stage"])
    (folder / "_SUCCESS").touch()
    # Without _common_metadata the cutoff is unknown: nothing to refuse.
    assert read_scores(folder, date(2025, 7, 1)).attrs["as_of"] is None
    schema = pa.Table.from_pandas(frame).schema
    metadata = schema.with_metadata({b"clm.as_of": b"2025-01-01"})
    pq.write_metadata(metadata, folder / "_common_metadata")
    with pytest.raises(DataError, match="scored as of 2025-01-01, not --as-of 2025-07-01"):
        read_scores(folder, date(2025, 7, 1))
    read = read_scores(folder, date(2025, 1, 1)).sort_values("customer_id")
    assert read.attrs["as_of"] == "2025-01-01"
    assert read["stage"].tolist() == ["purchase", "retention"]  # text, not categories
    assert read["customer_id"].tolist() == ["A", "B"]
    assert read["churn_probability"].tolist() == [0.2, 0.7]
    empty = tmp_path / "empty.parquet"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty.parquet: a folder with no Parquet parts"):
        read_scores(empty)
    pq.write_metadata(metadata, empty / "_common_metadata")  # metadata, still no parts
    with pytest.raises(DataError, match=r"empty.parquet: a folder with no Parquet parts"):
        read_scores(empty)


def test_scored_customers_unknown_to_the_data_are_named_in_a_note(tmp_path: Path) -> None:
    folder = write_tables(
        tmp_path / "d",
        transactions=[tx("A", "2025-01-05", 10.0), tx("B", "2025-02-05", 20.0)],
    )
    scores = read_scores(_scores(tmp_path / "s.csv", customer_id=["A", "stranger"]))
    report = build_report(
        load(folder), as_of=date(2025, 7, 1), settings=ClmSettings(), source="t",
        scores=scores, scores_source="s.csv",
    )  # fmt: skip
    assert any(
        n.startswith("1 customer(s) in s.csv are not known in the data at 2025-07-01")
        and "stranger" in n
        for n in report.notes
    ), report.notes
    assert any("1 customer(s) known at 2025-07-01 are not in s.csv" in n for n in report.notes)
