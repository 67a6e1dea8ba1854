"""Point-in-time correctness and the one snapshot path, on the synthetic sample."""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from clm.errors import DataError
from clm.settings import ClmSettings
from features import synthetic
from features.rollups import ROLLUPS
from features.snapshots import build_snapshot, build_snapshots, snapshot_sql
from features.sources import load
from features.sql import to_spark
from tests.helpers import tx, write_tables

AS_OF = date(2025, 1, 1)


def _future_rows(data: synthetic.SyntheticData) -> dict[str, pa.Table]:
    """Rows dated exactly at and after AS_OF, for known and brand-new customers."""
    known = data.transactions.column("customer_id")[0].as_py()
    at = pa.scalar(pd.Timestamp("2025-01-01T00:00:00Z"), pa.timestamp("us", tz="UTC"))
    later = pa.scalar(pd.Timestamp("2025-03-01T12:00:00Z"), pa.timestamp("us", tz="UTC"))
    tx = pa.table(
        {
            "customer_id": [known, known, "NEW-1"],
            "timestamp": pa.array([at, later, at]),
            "order_id": ["F1", "F2", "F3"],
            "amount": [500.0, -20.0, 75.0],
            "channel": ["web", "phone", "store"],
        }
    )
    ev = pa.table(
        {
            "customer_id": [known, known, known, "NEW-2"],
            "timestamp": pa.array([at, at, later, at]),
            "event_type": ["cancel", "nps", "brand_new_event_type", "signup"],
            "value": [None, 0.0, None, None],
            "channel": ["chat", "email", "web", "web"],
        }
    )
    customers = pa.table(
        {
            "customer_id": ["NEW-3"],
            "signup_date": pa.array([date(2025, 1, 1)], pa.date32()),
            "acquisition_channel": ["social"],
            "region": ["north"],
            "age": [30.0],
        }
    )
    return {"transactions": tx, "events": ev, "customers": customers}


def test_rows_at_and_after_the_cutoff_change_nothing(
    sample_data: synthetic.SyntheticData, sample_dir: Path, tmp_path: Path
) -> None:
    settings = ClmSettings()
    before = build_snapshot(load(sample_dir), as_of=AS_OF, settings=settings)
    future = _future_rows(sample_data)
    for name, extra in future.items():
        table = getattr(sample_data, name)
        combined = pa.concat_tables([table, extra.cast(table.schema)])
        pq.write_table(combined, tmp_path / f"{name}.parquet")
    after = build_snapshot(load(tmp_path), as_of=AS_OF, settings=settings)
    assert len(before) > 1000
    pd.testing.assert_frame_equal(before, after)
    # ...while the same rows, moved one day earlier, do change the features.
    assert "NEW-1" not in set(after.customer_id)


def test_one_row_per_known_customer_and_stable_columns(sample_dir: Path) -> None:
    data = load(sample_dir)
    frame = build_snapshot(data, as_of=AS_OF, settings=ClmSettings())
    assert frame.customer_id.is_unique
    known = data.con.execute(
        "SELECT count(DISTINCT customer_id) FROM (SELECT customer_id FROM transactions WHERE "
        "ts < DATE '2025-01-01' UNION ALL SELECT customer_id FROM events WHERE ts < DATE "
        "'2025-01-01' UNION ALL SELECT customer_id FROM customers WHERE signup_date < "
        "DATE '2025-01-01') AS k"
    ).fetchall()[0][0]
    assert len(frame) == known
    assert frame.as_of.unique().tolist() == [AS_OF]
    for expected in ("purchases_90d", "spend_365d", "session_events_30d", "days_in_stage"):
        assert expected in frame.columns


def test_snapshots_at_many_cutoffs_share_columns_and_carry_labels(sample_dir: Path) -> None:
    cutoffs = [date(2024, 1, 1), date(2024, 7, 1)]
    frame = build_snapshots(load(sample_dir), cutoffs=cutoffs, settings=ClmSettings())
    assert sorted(frame.as_of.unique()) == cutoffs
    assert {"label_churned", "label_next_stage", "label_purchases", "label_spend"} <= set(
        frame.columns
    )
    buyers = frame[frame.purchase_days > 0]
    # Recent buyers churn less than long-idle ones: the labels carry the signal.
    recent = buyers[buyers.days_since_last_purchase <= 30].label_churned.mean()
    idle = buyers[buyers.days_since_last_purchase > 120].label_churned.mean()
    assert recent < idle - 0.2


def test_cutoff_before_the_data_is_an_error(sample_dir: Path) -> None:
    with pytest.raises(DataError, match="is not after the first record"):
        build_snapshot(load(sample_dir), as_of=date(2020, 1, 1), settings=ClmSettings())


def test_a_cutoff_long_after_the_data_is_warned_about(tmp_path: Path) -> None:
    write_tables(tmp_path, transactions=[tx("a", "2024-01-01", 5.0), tx("b", "2024-03-10", 2.0)])
    dataset = load(tmp_path)
    settings = ClmSettings()
    with pytest.warns(UserWarning) as caught:
        late = build_snapshot(dataset, as_of=date(2024, 5, 1), settings=settings)
    assert [str(w.message) for w in caught] == [
        "as_of 2024-05-01 is 52 days after the data's last record (2024-03-10): every "
        "customer looks inactive since then; check the date or the export "
        "(features.stale_after_days)"
    ]
    assert len(late) == 2  # still built
    # Within features.stale_after_days (31) of the last record: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_snapshot(dataset, as_of=date(2024, 4, 10), settings=settings)  # 31 days
        quiet = settings.model_copy(
            update={"features": settings.features.model_copy(update={"stale_after_days": 60})}
        )
        build_snapshot(dataset, as_of=date(2024, 5, 1), settings=quiet)


def test_a_transactions_only_folder_works_end_to_end(
    sample_data: synthetic.SyntheticData, tmp_path: Path
) -> None:
    pq.write_table(sample_data.transactions, tmp_path / "transactions.parquet")
    frame = build_snapshot(load(tmp_path), as_of=AS_OF, settings=ClmSettings(), labels=True)
    assert set(frame.stage) <= {"purchase", "retention", "churned"}
    assert (frame.events_30d == 0).all() and frame.days_since_last_event.isna().all()
    assert frame.purchase_days.min() >= 1


def test_feature_sql_transpiles_to_spark(sample_dir: Path) -> None:
    data = load(sample_dir)
    sql = snapshot_sql(
        as_of=AS_OF,
        settings=ClmSettings(),
        event_types=["session", "nps"],
        attributes=list(data.attributes),
        labels=True,
        channels=data.channels(),
    )
    assert "bit_or" in sql
    for query in [sql, *ROLLUPS.values()]:
        spark = to_spark(query)
        sqlglot.parse_one(spark, read="spark")  # parses back as Spark SQL
        assert " FILTER" not in spark
    assert "DATEDIFF" in to_spark(sql)


def test_nps_answers_outside_0_to_10_are_refused_with_their_rows(tmp_path: Path) -> None:
    from tests.helpers import ev, tx, write_tables

    answers = [9, 11, None, -1, 10, 0, 10.5, 7.5]
    folder = write_tables(
        tmp_path,
        transactions=[tx("A", "2024-01-05", 10.0)],
        events=[ev("A", f"2024-02-{i + 1:02d}", "nps", v) for i, v in enumerate(answers)]
        + [ev("A", "2024-03-01", "visit", 50)],  # another type's value is no answer
    )
    with pytest.raises(DataError) as err:
        build_snapshot(load(folder), as_of=date(2024, 6, 1), settings=ClmSettings())
    assert str(err.value) == (
        "events.csv: column 'value': 4 NPS answer(s) (nps) outside 0-10 or not whole "
        "(expected a whole score from 0 to 10): row 2 (line 3) 11, row 4 (line 5) -1, "
        "row 7 (line 8) 10.5, row 8 (line 9) 7.5"
    )
    # A mapped column is named as in the file.
    (folder / "events.csv").write_text(
        (folder / "events.csv").read_text().replace("value", "answer", 1)
    )
    mapped = load(folder, columns={"events": {"value": "answer"}})
    with pytest.raises(DataError, match=r"column 'answer' \(mapped to value\): 4 NPS answer"):
        build_snapshot(mapped, as_of=date(2024, 6, 1), settings=ClmSettings())
    (folder / "events.csv").write_text(
        (folder / "events.csv").read_text().replace("answer", "value", 1)
    )
    # The types are settings: with none, the same values are no answers.
    none = ClmSettings(stages={"nps_event_types": ["survey"]})  # type: ignore[arg-type]
    assert len(build_snapshot(load(folder), as_of=date(2024, 6, 1), settings=none)) == 1


def test_nps_answers_all_at_5_or_less_and_unanswered_surveys_are_warned_about(
    tmp_path: Path,
) -> None:
    from tests.helpers import ev, tx, write_tables

    # A 1-5 satisfaction survey sent as 'nps': 20 answers, none above 5; one left empty.
    answers = [1 + i % 5 for i in range(20)] + [None]
    folder = write_tables(
        tmp_path,
        transactions=[tx("A", "2024-01-05", 10.0)],
        events=[ev("A", f"2024-02-{i + 1:02d}", "nps", v) for i, v in enumerate(answers)],
    )
    with pytest.warns(UserWarning) as caught:
        build_snapshot(load(folder), as_of=date(2024, 3, 1), settings=ClmSettings())
    assert [str(w.message) for w in caught] == [
        "events.csv: all 20 NPS answers (nps) are 5 or less: NPS is asked on 0-10 (promoters "
        "9-10); answers on a 1-5 scale make every customer a detractor (rescale them, or use "
        "another event type)",
        "events.csv: 1 NPS event(s) (nps) without a value are counted as events, not as answers",
    ]
    # One answer above 5, no empty one: nothing to say.
    answers[-1] = 9
    folder = write_tables(
        tmp_path / "fine",
        transactions=[tx("A", "2024-01-05", 10.0)],
        events=[ev("A", f"2024-02-{i + 1:02d}", "nps", v) for i, v in enumerate(answers)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_snapshot(load(folder), as_of=date(2024, 3, 1), settings=ClmSettings())


def test_event_settings_whose_types_the_data_names_otherwise_are_warned_about_once(
    tmp_path: Path,
) -> None:
    from tests.helpers import ev, tx, write_tables

    events = [
        ev("A", "2024-02-01", "nps_response", 9.0),
        ev("A", "2024-02-02", "nps_response", 10.0),
        ev("B", "2024-02-03", "Subscription_Cancelled"),
        ev("A", "2024-02-04", "email_opened"),
        ev("A", "2024-02-04", "email_sent"),
        ev("B", "2024-02-05", "visit"),
    ]
    transactions = [tx("A", "2024-01-05", 10.0), tx("B", "2024-01-06", 5.0)]
    dataset = load(write_tables(tmp_path, transactions=transactions, events=events))
    with pytest.warns(UserWarning) as caught:
        build_snapshot(dataset, as_of=date(2024, 2, 15), settings=ClmSettings())
        build_snapshot(dataset, as_of=date(2024, 3, 1), settings=ClmSettings())
    said = [str(w.message) for w in caught if "none in the data" in str(w.message)]
    assert said == [
        "events.csv: stages.nps_event_types names nps, none in the data, which has "
        "nps_response (2 with a value); stages.cancel_event_types names cancel, none in the "
        "data, which has Subscription_Cancelled; features.email_open_event_type names "
        "email_open, none in the data, which has email_opened: events of a type no setting "
        "names are only counted, so their NPS answers, cancellations, advocacy or email rates "
        "count for nothing; name your types in those settings (clm.toml)"
    ]
    # Named in the settings: their answers and cancellations count, and nothing is said.
    named = ClmSettings(
        stages={
            "nps_event_types": ["nps_response"],
            "cancel_event_types": ["Subscription_Cancelled"],
        },
        features={"email_open_event_type": "email_opened"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snapshot = build_snapshot(load(tmp_path), as_of=date(2024, 3, 1), settings=named)
    row = snapshot.set_index("customer_id")
    assert row.loc["A", "last_nps"] == 10.0 and row.loc["B", "stage"] == "churned"


def test_event_types_that_would_name_the_same_columns_are_refused(tmp_path: Path) -> None:
    from tests.helpers import ev, tx, write_tables

    folder = write_tables(
        tmp_path,
        transactions=[tx("A", "2024-01-05", 10.0)],
        events=[ev("A", "2024-02-01", "visit"), ev("A", "2024-02-02", "NPS", 9),
                ev("B", "2024-02-03", "nps", 7)],
    )  # fmt: skip
    with pytest.raises(DataError) as err:
        build_snapshot(load(folder), as_of=date(2024, 6, 1), settings=ClmSettings())
    assert str(err.value) == (
        "events.csv: column 'event_type': 'NPS' (row 2 (line 3)) and 'nps' (row 3 (line 4)) "
        "would both count as 'nps_*' features (expected event types that differ by more than "
        "case and punctuation); spell them alike or set features.event_types"
    )


def test_configured_event_types_that_would_name_the_same_columns_are_refused(
    tmp_path: Path,
) -> None:
    from clm.errors import ConfigError
    from tests.helpers import ev, tx, write_tables

    folder = write_tables(
        tmp_path,
        transactions=[tx("A", "2024-01-05", 10.0)],
        events=[ev("A", "2024-02-01", "nps", 9)],
    )
    settings = ClmSettings(features={"event_types": ["nps", "visit", "NPS!"]})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        build_snapshot(load(folder), as_of=date(2024, 6, 1), settings=settings)
    assert str(err.value) == (
        "features.event_types: 'nps' and 'NPS!' would both count as 'nps_*' features; list one "
        "of them"
    )
