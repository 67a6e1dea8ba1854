"""``clm score`` (local engine) on the deployment's champions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from datetime import date
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clm.errors import ClmError, DataError
from clm.settings import ClmSettings
from features.snapshots import build_snapshot
from features.sources import load
from serving.batch import VERSION_COLUMNS, BatchRequest, output_fields, score_batch
from tests.helpers import workbook
from tests.serving.conftest import AS_OF, Deployment

pytestmark = pytest.mark.slow


def settings(deployment: Deployment) -> ClmSettings:
    uri = deployment.env["CLM_TRAINING__TRACKING_URI"]
    return ClmSettings(training={"tracking_uri": uri})  # type: ignore[arg-type]


def run(deployment: Deployment, out: Path, **options) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    request = BatchRequest(data=deployment.data, as_of=date(2025, 7, 1), out=out, **options)
    score_batch(request, settings(deployment))
    return pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out)


def test_every_known_customer_is_scored_like_the_registered_models(
    everyone: pd.DataFrame, deployment: Deployment
) -> None:
    snapshot = build_snapshot(load(deployment.data), as_of=date(2025, 7, 1), settings=ClmSettings())
    assert everyone["customer_id"].tolist() == snapshot["customer_id"].tolist()
    assert everyone["known"].all()
    uri = deployment.env["CLM_TRAINING__TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    features = snapshot.drop(columns=["customer_id", "as_of"])
    churn = mlflow.pyfunc.load_model("models:/clm-churn@champion").predict(features)
    clv = mlflow.pyfunc.load_model("models:/clm-clv@champion").predict(features)
    np.testing.assert_allclose(everyone["churn_probability"], churn["churn_probability"], atol=1e-6)
    np.testing.assert_allclose(everyone["clv"], clv["clv"], rtol=1e-5)
    assert set(everyone["action"]) > {"none"}
    assert everyone["reason_1"].notna().all()
    prospects = everyone["stage"].isin(["awareness", "consideration"])
    assert ((everyone["churn_risk"] == "prospect") == prospects).all()
    assert set(everyone.loc[~prospects, "churn_risk"]) == {"low", "medium", "high"}


def test_parquet_metadata_and_rows_name_the_model_versions(
    deployment: Deployment, tmp_path: Path
) -> None:
    out = tmp_path / "s.parquet"
    run(deployment, out)
    metadata = pq.read_schema(out).metadata
    versions = json.loads(metadata[b"clm.model_versions"])
    assert set(versions) == {"clm-churn", "clm-stage", "clm-clv"}
    trained = {"clm-churn": 90, "clm-stage": 90, "clm-clv": 365}
    assert json.loads(metadata[b"clm.horizon_days"]) == trained
    frame = pd.read_parquet(out)
    assert (frame["version_churn"] == versions["clm-churn"]).all()
    # The columns are those output_fields lists (the Spark schema is built from it), in order.
    reasons = ClmSettings().serving.reasons
    fields = [name for name, _ in output_fields(reasons)]
    assert frame.columns.tolist() == [*fields, *VERSION_COLUMNS]


def test_rfm_segments_rank_each_customer_among_every_buyer(
    deployment: Deployment, everyone: pd.DataFrame, tmp_path: Path
) -> None:
    from reporting.metrics import rfm_segments

    snapshot = build_snapshot(
        load(deployment.data), as_of=date(2025, 7, 1), settings=ClmSettings()
    ).set_index("customer_id")
    buyers = snapshot[snapshot["days_since_last_purchase"].notna()]
    expected = rfm_segments(buyers["days_since_last_purchase"], buyers["purchase_days"])
    scored = everyone.set_index("customer_id")["rfm_segment"]
    assert scored.reindex(buyers.index).tolist() == expected.tolist()
    assert scored.drop(buyers.index).isna().all()  # never bought: no segment
    assert {"champions", "lost"} <= set(scored.dropna())
    # A list's customers keep their segment among all buyers, not among the list's.
    listed = [*expected[expected == "lost"].index[:2], *expected[expected == "champions"].index[:2]]
    listing = tmp_path / "list.csv"
    pd.DataFrame({"customer_id": [*listed, "brand-new"]}).to_csv(listing, index=False)
    out = run(deployment, tmp_path / "out.csv", customers=listing)
    assert out["rfm_segment"].tolist()[:4] == ["lost", "lost", "champions", "champions"]
    assert pd.isna(out["rfm_segment"].iloc[4])
    # A first chunk of prospects only (no segment at all) still types the column as text.
    prospects = scored[scored.isna()].index[:3].tolist()
    listing.write_text("customer_id\n" + "\n".join([*prospects, *listed]) + "\n")
    with mock.patch("serving.batch.CHUNK_ROWS", 3):
        out = run(deployment, tmp_path / "chunks.parquet", customers=listing)
    assert pq.read_schema(tmp_path / "chunks.parquet").field("rfm_segment").type in (
        pa.string(),
        pa.large_string(),
    )
    assert out["rfm_segment"].tolist()[3:] == ["lost", "lost", "champions", "champions"]


def test_customer_list_keeps_order_flags_unknown_ids_and_carries_columns(
    deployment: Deployment, everyone: pd.DataFrame, tmp_path: Path
) -> None:
    known = everyone["customer_id"].iloc[[30, 5, 400]].tolist()
    listing = tmp_path / "list.csv"
    pd.DataFrame(
        {"customer_id": [known[0], "brand-new", *known[1:]], "campaign": ["a", "b", "c", "d"]}
    ).to_csv(listing, index=False)
    out = run(deployment, tmp_path / "out.csv", customers=listing)
    assert out["customer_id"].tolist() == [known[0], "brand-new", *known[1:]]
    assert out["known"].tolist() == [True, False, True, True]
    assert out["campaign"].tolist() == ["a", "b", "c", "d"]
    assert out.loc[1, "stage"] == "awareness"
    again = everyone.set_index("customer_id").loc[known[0], "churn_probability"]
    assert out.loc[0, "churn_probability"] == pytest.approx(again, abs=1e-9)


def test_budget_keeps_the_most_valuable_costly_actions(
    deployment: Deployment, everyone: pd.DataFrame, tmp_path: Path
) -> None:
    acting = everyone[everyone["action"] != "none"]
    assert len(acting) > 20
    capped = run(deployment, tmp_path / "b.parquet", budget=10)
    kept = capped[capped["action"] != "none"]
    assert len(kept) == 10
    assert kept["action_value"].min() >= acting["action_value"].nlargest(10).min() - 1e-9


def test_longer_horizon_lowers_the_chance_of_no_purchase(
    deployment: Deployment, everyone: pd.DataFrame, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 180 days is well inside the history: no warning
        longer = run(deployment, tmp_path / "h.parquet", horizon_days=180)
    assert (longer["churn_probability"] <= everyone["churn_probability"] + 1e-9).all()
    horizons = json.loads(pq.read_schema(tmp_path / "h.parquet").metadata[b"clm.horizon_days"])
    assert horizons == {"clm-churn": 180, "clm-stage": 180, "clm-clv": 365}  # as asked
    assert longer["churn_probability"].mean() < everyone["churn_probability"].mean() - 0.01
    # Longer than the history before the cutoff (2023-01-01 to 2025-07-01): scored, and said.
    with pytest.warns(UserWarning, match="--clv-horizon-days 5,000 is longer than the 9"):
        far = run(deployment, tmp_path / "far.parquet", clv_horizon_days=5000)
    assert (far["expected_purchases"] >= everyone["expected_purchases"] - 1e-9).all()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id\nC1\n", "no customer_id column"),
        ("customer_id\nC1\n\n", None),  # a trailing blank line is no row
        ("customer_id,x\nC1,1\n,2\n", "1 ids empty or a missing-value marker"),
        ("customer_id\nC1\nC1\n", "duplicated ids, first 'C1'"),
        (
            "customer_id,x\nC1,1\n\nC2,2\nNULL,3\n",
            r"column customer_id: 1 ids empty or a missing-value marker \(NULL, N/A, \.\.\.; "
            r"expected text\), first at row 3 \(line 5\)",
        ),
        ("customer_id\nC1\nC2\nC1\n", r"first 'C1' at row 1 \(line 2\), row 3 \(line 4\)"),
        ("customer_id\n", "the customer list has no rows"),
        ("customer_id,x\nC1,1\nC2,2,3\n", "not a readable customer list"),
        # One field too many in the first row: no index column, every id would shift.
        (
            "customer_id,x\nC1,1,extra\nC2,2\n",
            r"not a readable customer list \(line 2 has 3 fields, the header 2",
        ),
        ("customer_id\n C1 \n", None),  # spaces trimmed, as from the data's ids
        ("customer_id\nC1\n C1\n", "duplicated ids, first 'C1'"),
        (
            "customer_id,stage,input_stage\nC1,a,b\n",
            "column 'input_stage': the output would have it twice",
        ),
    ],
)
def test_bad_customer_lists_are_named_and_leave_the_old_output(
    deployment: Deployment, tmp_path: Path, content: str, message: str | None
) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(content)
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    if message is None:
        run(deployment, out, customers=listing)
        assert pd.read_csv(out)["customer_id"].tolist() == ["C1"]
        return
    with pytest.raises(DataError, match=message) as error:
        run(deployment, out, customers=listing)
    assert str(listing) in str(error.value)
    assert out.read_text() == "previous\n"
    assert not list(tmp_path.glob(".*partial"))


def test_a_parquet_list_of_float_ids_reads_whole_numbers_as_integer_text(tmp_path: Path) -> None:
    from serving.batch import read_customer_list

    listing = tmp_path / "list.parquet"
    pd.DataFrame({"customer_id": [2474.0, 12.0], "x": [1, 2]}).to_parquet(listing)
    assert read_customer_list(listing)["customer_id"].tolist() == ["2474", "12"]
    pd.DataFrame({"customer_id": [2474.0, 12.5]}).to_parquet(listing)
    with pytest.raises(DataError, match=r"1 ids not whole numbers .*first at row 2"):
        read_customer_list(listing)
    pd.DataFrame({"customer_id": [float("inf"), 1e20, None]}).to_parquet(listing)
    with pytest.raises(DataError, match=r"2 ids not whole numbers below 2\^53 .*first at row 1"):
        read_customer_list(listing)
    pd.DataFrame({"customer_id": [True, False]}).to_parquet(listing)
    with pytest.raises(DataError, match="customer_id has type bool"):
        read_customer_list(listing)


def test_the_list_and_the_output_are_checked_before_any_slow_work(tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_bytes("customer_id\nRen\xe9\n".encode("latin-1"))
    absent = tmp_path / "no-data"  # never reached: the list is refused first
    request = BatchRequest(data=absent, as_of=date(2025, 7, 1), out=tmp_path / "o.csv",
                           customers=listing)  # fmt: skip
    with pytest.raises(DataError, match=rf"{listing}: not a readable customer list"):
        score_batch(request, ClmSettings())
    folder = tmp_path / "out.parquet"
    folder.mkdir()
    with pytest.raises(DataError, match="a folder"):
        score_batch(BatchRequest(data=absent, as_of=date(2025, 7, 1), out=folder), ClmSettings())
    # A horizon of 0 days has no answer (the models would give the trained one).
    zero = BatchRequest(data=absent, as_of=date(2025, 7, 1), out=tmp_path / "o.csv", horizon_days=0)
    with pytest.raises(DataError, match=r"--horizon-days 0: expected a whole number of days >= 1"):
        score_batch(zero, ClmSettings())


def test_an_output_onto_an_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    from tests.helpers import tx, write_tables

    folder = write_tables(tmp_path / "data", transactions=[tx("A", "2024-01-02", 5.0)])
    listing = tmp_path / "list.csv"
    listing.write_text("customer_id,segment\nA,vip\n")
    table = next(folder.glob("transactions.*"))
    before = {path: path.read_bytes() for path in (listing, table)}
    as_of = date(2024, 2, 1)
    for out, message in (
        (tmp_path / "." / "list.csv", "that is the --customers file"),
        (folder / table.name, f"a table file of --data {folder}"),
        # Another case or format is a second file for the table: the next load would refuse.
        (folder / "TRANSACTIONS.parquet", f"a table file of --data {folder}"),
    ):
        for engine in ("local", "spark"):
            request = BatchRequest(data=folder, as_of=as_of, out=out, customers=listing,
                                   engine=engine)  # fmt: skip
            if engine == "spark" and out.suffix == ".csv":
                continue  # refused for its format first
            with pytest.raises(DataError, match=rf"--out {re.escape(str(out))}: {message}"):
                score_batch(request, ClmSettings())
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in folder.iterdir()) == [table.name]
    # A scores file beside the tables is no table: written.
    score_out = folder / "scores.csv"
    request = BatchRequest(data=folder, as_of=as_of, out=score_out, customers=listing)
    with pytest.raises(ClmError, match="no MLflow store"):  # past the check; no models here
        score_batch(request, ClmSettings(training={"tracking_uri": f"sqlite:///{tmp_path}/m.db"}))


def test_clm_score_prints_a_summary(deployment: Deployment, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clm", "score", "--data", str(deployment.data), "--as-of", AS_OF,
         "--out", str(tmp_path / "s.csv"), "--budget", "5"],
        env=deployment.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    for label in ("customers", "churn risk", "actions", "cut by budget", "expected value"):
        assert label in result.stdout
    assert (tmp_path / "s.csv").exists()
    assert result.stderr == ""  # off a terminal no progress bar, not even its empty line


def test_a_transactions_only_folder_trains_and_scores_end_to_end(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = tmp_path / "tx-only"
    folder.mkdir()
    (folder / "transactions.parquet").write_bytes(
        (deployment.data / "transactions.parquet").read_bytes()
    )
    env = {**deployment.env, "CLM_TRAINING__TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    for args in (("train", "all"), ("score", "--out", str(tmp_path / "s.csv"))):
        result = subprocess.run(
            [sys.executable, "-m", "clm", "--debug", *args, "--data", str(folder),
             "--as-of", AS_OF],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        # No warning from a library (with --debug a warning names the file it came from).
        assert "site-packages" not in result.stderr, result.stderr
    scores = pd.read_csv(tmp_path / "s.csv")
    assert len(scores) > 500 and scores["known"].all()
    assert set(scores["stage"]) <= {"purchase", "retention", "churned"}  # buyers only
    assert scores["churn_probability"].between(0, 1).all()
    assert (scores["clv"] >= 0).all() and scores["clv"].sum() > 0


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_output_is_written_a_chunk_at_a_time_with_the_budget_over_all_chunks(
    deployment: Deployment, everyone: pd.DataFrame, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, suffix: str,
) -> None:  # fmt: skip
    whole = run(deployment, tmp_path / f"whole{suffix}", budget=10)
    listing = tmp_path / "list.csv"
    ids = everyone["customer_id"].tolist()
    pd.DataFrame({"customer_id": [*ids, "new-1"], "note": range(len(ids) + 1)}).to_csv(
        listing, index=False
    )
    monkeypatch.setattr("serving.batch.CHUNK_ROWS", 97)
    out = tmp_path / f"chunked{suffix}"
    chunked = run(deployment, out, budget=10, customers=listing)
    assert len(chunked) == len(ids) + 1
    assert chunked["note"].tolist() == list(range(len(ids) + 1))
    assert chunked["known"].tolist() == [True] * len(ids) + [False]
    if suffix == ".parquet":  # written as it was scored: a row group per chunk
        assert pq.ParquetFile(out).num_row_groups == -(-(len(ids) + 1) // 97)
    # The budget ranks every customer, not each chunk: the same ten actions as in one chunk
    # (the new customer's action is "none" or worth less than the tenth).
    kept = chunked[chunked["action"] != "none"]
    assert len(kept) == 10
    assert set(kept["customer_id"]) == set(whole.loc[whole["action"] != "none", "customer_id"])
    pd.testing.assert_frame_equal(
        chunked.iloc[:-1].drop(columns=["note"]).reset_index(drop=True),
        whole.reset_index(drop=True),
        check_exact=False, rtol=1e-9,
    )  # fmt: skip
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".*spill"))


@pytest.mark.parametrize("budget", [None, 10])
def test_a_run_interrupted_mid_stream_leaves_the_old_output_and_no_temporary_file(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int | None
) -> None:
    import serving.batch

    out = tmp_path / "out.parquet"
    out.write_bytes(b"previous")
    real, calls = serving.batch.score_frame, []

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:  # two chunks are already in the temporary file
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("serving.batch.CHUNK_ROWS", 200)
    monkeypatch.setattr("serving.batch.score_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(deployment, out, budget=budget)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_carried_columns_keep_their_types_through_chunks_and_the_budget(
    deployment: Deployment, everyone: pd.DataFrame, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    ids = everyone["customer_id"].iloc[:300].tolist()
    listing = tmp_path / "list.parquet"
    pd.DataFrame(
        {
            "customer_id": ids,
            "segment": pd.Categorical(["a", "b", "c"] * 100),
            "score": pd.array([None if i % 7 == 0 else i for i in range(300)], dtype="Int64"),
            "clv": 1.0,  # named like an output column: carried as input_clv
        }
    ).to_parquet(listing)
    monkeypatch.setattr("serving.batch.CHUNK_ROWS", 50)
    out = run(deployment, tmp_path / "out.parquet", customers=listing, budget=5)
    assert isinstance(out["segment"].dtype, pd.CategoricalDtype)
    assert out["segment"].tolist() == ["a", "b", "c"] * 100
    assert str(out["score"].dtype) == "Int64"
    assert out["score"].isna().sum() == 43 and out["score"].iloc[1] == 1
    assert (out["input_clv"] == 1.0).all() and not (out["clv"] == 1.0).all()
    assert (out["action"] != "none").sum() == 5


def test_data_without_an_event_type_the_champions_use_scores_with_zero_counts(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = tmp_path / "no-referrals"
    folder.mkdir()
    for name in ("transactions.parquet", "customers.parquet"):
        (folder / name).write_bytes((deployment.data / name).read_bytes())
    events = pd.read_parquet(deployment.data / "events.parquet")
    assert (events["event_type"] == "referral").any()
    events[events["event_type"] != "referral"].to_parquet(folder / "events.parquet")
    out = tmp_path / "s.parquet"
    score_batch(BatchRequest(data=folder, as_of=date(2025, 7, 1), out=out), settings(deployment))
    scored = pd.read_parquet(out)
    data = load(folder)
    plain = build_snapshot(data, as_of=date(2025, 7, 1), settings=ClmSettings())
    assert "referral_events_30d" not in plain.columns
    # The snapshot with the type's columns computed (all 0): what the scores must match.
    types = sorted({*events["event_type"].unique()})
    full = build_snapshot(data, as_of=date(2025, 7, 1), settings=ClmSettings(), event_types=types)
    assert (full["referral_events_30d"] == 0).all()
    uri = deployment.env["CLM_TRAINING__TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    churn = mlflow.pyfunc.load_model("models:/clm-churn@champion").predict(
        full.drop(columns=["customer_id", "as_of"])
    )
    assert scored["customer_id"].tolist() == full["customer_id"].tolist()
    np.testing.assert_allclose(scored["churn_probability"], churn["churn_probability"], atol=1e-6)


def test_a_list_may_name_its_ids_as_the_column_mapping_does(tmp_path: Path) -> None:
    from serving.batch import _mapped_id_names, read_customer_list

    mapped = ClmSettings(data={"columns": {"transactions": {"customer_id": "client"}}})  # type: ignore[arg-type]
    names = _mapped_id_names(mapped)
    assert names == ("client",)
    listing = tmp_path / "list.csv"
    listing.write_text("client,campaign\n007,a\n12,b\n")
    frame = read_customer_list(listing, names)
    assert frame.columns.tolist() == ["customer_id", "campaign"]
    assert frame["customer_id"].tolist() == ["007", "12"]  # read as text, zeros kept
    listing.write_text("client,campaign\n007,a\n007,b\n")  # messages name the list's column
    with pytest.raises(DataError, match=r"column 'client' \(mapped to customer_id\): 1 dup"):
        read_customer_list(listing, names)
    with pytest.raises(DataError, match=r"no customer_id column \(found client, campaign\)"):
        read_customer_list(listing, ())
    listing.write_text("id,campaign\n1,a\n")
    with pytest.raises(DataError, match=r"no customer_id column or 'client' \(mapped\)"):
        read_customer_list(listing, names)
    # customer_id and the mapped name together: the same ids (a scored list carrying its
    # source column) are read once; different ids are ambiguous and refused, naming the row.
    listing.write_text("customer_id,client\n007,007\n2,2\n")
    frame = read_customer_list(listing, names)
    assert frame.columns.tolist() == ["customer_id", "client"]
    assert frame["customer_id"].tolist() == ["007", "2"]
    listing.write_text("customer_id,client\n1,1\n2,3\n4,5\n")
    with pytest.raises(
        DataError,
        match=r"columns customer_id and 'client' \(mapped to customer_id\) hold different ids "
        r"\(2 rows, first at row 2 \(line 3\): '2' vs '3'\)",
    ):
        read_customer_list(listing, names)
    listing.write_text("customer_id,client\n1,2\n")
    assert read_customer_list(listing, ())["customer_id"].tolist() == ["1"]  # no mapping: carried
    # A campaign list kept in Excel: cells as text (ids as written), rows as the sheet numbers them.
    sheet = tmp_path / "campaign.xlsx"
    workbook(sheet, ("List", [["Customer_ID", "offer"], [7, "10% off"], [None, None], ["A1", 5]]))
    frame = read_customer_list(sheet)
    assert frame.columns.tolist() == ["customer_id", "offer"]
    assert frame.to_dict("list") == {"customer_id": ["7", "A1"], "offer": ["10% off", "5"]}
    workbook(sheet, ("List", [["customer_id"], ["A1"], ["B2"], ["A1"]]))
    with pytest.raises(DataError, match=r"1 duplicated ids, first 'A1' at row 2, row 4; each"):
        read_customer_list(sheet)
    # Compared as ids are read: spaces trimmed, a float column's whole numbers as integers.
    listing.write_text("customer_id,client\n C1 ,C1\n")
    assert read_customer_list(listing, names)["customer_id"].tolist() == ["C1"]
    both_parquet = tmp_path / "both.parquet"
    pd.DataFrame({"customer_id": ["2474", "12"], "client": [2474.0, 12.0]}).to_parquet(both_parquet)
    assert read_customer_list(both_parquet, names)["customer_id"].tolist() == ["2474", "12"]
    both = ClmSettings(
        data={"columns": {"*": {"customer_id": "client"}, "customers": {"customer_id": "id"}}}  # type: ignore[arg-type]
    )
    assert _mapped_id_names(both) == ("client", "id")
    listing.write_text("client,id\n1,2\n")
    with pytest.raises(DataError, match="'client' and 'id' are both mapped to customer_id"):
        read_customer_list(listing, _mapped_id_names(both))
    # The id column in another case, as data columns are matched (and still read as text).
    listing.write_text("Customer_ID,segment\n007,a\n")
    frame = read_customer_list(listing)
    assert frame.columns.tolist() == ["customer_id", "segment"]
    assert frame["customer_id"].tolist() == ["007"]
    listing.write_text("CLIENT,segment\n007,a\n")
    assert read_customer_list(listing, names)["customer_id"].tolist() == ["007"]
    parquet = tmp_path / "list.parquet"
    pd.DataFrame({"CUSTOMER_ID": ["C1", "C2"], "n": [1, 2]}).to_parquet(parquet)
    assert read_customer_list(parquet).columns.tolist() == ["customer_id", "n"]


def test_scoring_data_without_the_events_the_champions_know_is_refused_or_warned(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = tmp_path / "lost-events"
    folder.mkdir()
    for table in ("transactions", "customers"):
        name = f"{table}.parquet"
        (folder / name).write_bytes((deployment.data / name).read_bytes())
    # A lost events file: every customer would look never engaged, and the scores move.
    _refused_by_every_path(
        deployment, folder, tmp_path, r"no events before 2025-07-01, but the champions were"
    )
    out = tmp_path / "s.parquet"
    request = BatchRequest(data=folder, as_of=date(2025, 7, 1), out=out)
    # One event type gone: scored (its counts are 0 for everyone), and said.
    events = pd.read_parquet(deployment.data / "events.parquet")
    assert "review" in set(events["event_type"])
    events[events["event_type"] != "review"].to_parquet(folder / "events.parquet")
    with pytest.warns(UserWarning, match=r"the data has no review events before 2025-07-01"):
        score_batch(request, settings(deployment))
    assert len(pd.read_parquet(out)) > 500


def test_a_list_of_ids_the_data_never_names_is_warned_about_with_the_near_matches(
    tmp_path: Path,
) -> None:
    from serving.batch import warn_unknown_list_ids
    from tests.helpers import tx, write_tables

    rows = [
        tx("000123", "2024-01-02", 5.0),
        tx("AB-7", "2024-01-03", 5.0),
        tx("x", "2024-01-04", 1.0),
    ]
    dataset = load(write_tables(tmp_path, transactions=rows))
    listing = tmp_path / "list.csv"
    # Excel dropped the zeros and someone lowered the case: 2 of 3 unknown, both near matches.
    frame = pd.DataFrame({"customer_id": ["123", "ab-7", "x"]})
    with pytest.warns(UserWarning) as caught:
        warn_unknown_list_ids(dataset, frame, listing)
    assert [str(w.message) for w in caught] == [
        f"{listing}: 2 of the list's 3 ids are in no table of the data ('123', 'ab-7'); they "
        "are scored as new customers; 2 match an id of the data once leading zeros and case "
        "are ignored ('123' ~ '000123', 'ab-7' ~ 'AB-7'): write them as the data does"
    ]
    # Half or fewer unknown (new prospects on a campaign list): nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unknown_list_ids(dataset, pd.DataFrame({"customer_id": ["new-1", "x"]}), listing)
    with pytest.warns(
        UserWarning,
        match=r"2 of the list's 2 ids .*\('n1', 'n2'\); they are scored as new customers$",
    ):
        warn_unknown_list_ids(dataset, pd.DataFrame({"customer_id": ["n1", "n2"]}), listing)
    # Near matches are of unknown ids only, each counted once ('7' is known as written).
    zeros = load(
        write_tables(
            tmp_path / "zeros",
            transactions=[tx("007", "2024-01-02", 5.0), tx("7", "2024-01-03", 5.0)],
        )
    )
    with pytest.warns(UserWarning) as caught:
        warn_unknown_list_ids(zeros, pd.DataFrame({"customer_id": ["7", "a", "b"]}), listing)
    assert [str(w.message) for w in caught] == [
        f"{listing}: 2 of the list's 3 ids are in no table of the data ('a', 'b'); they are "
        "scored as new customers"
    ]
    # One id of many written in another case: said, though most of the list is known.
    with pytest.warns(UserWarning) as caught:
        warn_unknown_list_ids(
            dataset, pd.DataFrame({"customer_id": ["x", "AB-7", "000123", "Ab-7"]}), listing
        )
    assert [str(w.message) for w in caught] == [
        f"{listing}: 1 of the list's 4 ids are in no table of the data ('Ab-7'); they are "
        "scored as new customers; 1 match an id of the data once leading zeros and case are "
        "ignored ('Ab-7' ~ 'AB-7'): write them as the data does"
    ]


def test_data_without_a_feature_the_champions_know_is_refused_by_every_path(
    deployment: Deployment, tmp_path: Path
) -> None:
    folder = tmp_path / "variant"
    folder.mkdir()
    for table in ("transactions", "events"):
        name = f"{table}.parquet"
        (folder / name).write_bytes((deployment.data / name).read_bytes())
    customers = pd.read_parquet(deployment.data / "customers.parquet")
    assert "age" in customers.columns
    customers.drop(columns=["age"]).assign(loyalty_tier="gold").to_parquet(
        folder / "customers.parquet"
    )
    _refused_by_every_path(
        deployment, folder, tmp_path,
        r"the champions need features attr_age that the data at 2025-07-01 lacks",
    )  # fmt: skip


def test_settings_that_change_what_the_features_mean_are_refused_by_every_path(
    deployment: Deployment, tmp_path: Path
) -> None:
    # The champions were trained with the defaults: 180 days of silence make a buyer churned.
    _refused_by_every_path(
        deployment, deployment.data, tmp_path,
        r"the champions were trained with features.support_event_types = \[\"support_ticket\"\] "
        r"\(now \[\"complaint\"\]\) \[clm-churn v\d+, clm-stage v\d+, clm-clv v\d+\]; "
        r"stages.churn_inactivity_days = 180 \(now 90\) \[clm-churn v\d+, clm-stage v\d+, "
        r"clm-clv v\d+\]: with these settings their features would mean something else; set "
        r"them back",
        env={
            "CLM_STAGES__CHURN_INACTIVITY_DAYS": "90",
            "CLM_FEATURES__SUPPORT_EVENT_TYPES": '["complaint"]',
        },
    )  # fmt: skip
    # The local engine says so once the data is read, before it builds the features.
    out = tmp_path / "s.parquet"
    with mock.patch.dict(os.environ, {"CLM_STAGES__CHURN_INACTIVITY_DAYS": "90"}):
        strict = settings(deployment)
    request = BatchRequest(data=deployment.data, as_of=date(2025, 7, 1), out=out)
    with (
        mock.patch("serving.batch.build_snapshot") as build,
        pytest.raises(DataError, match=r"stages.churn_inactivity_days = 180 \(now 90\)"),
    ):
        score_batch(request, strict)
    build.assert_not_called()
    # A setting that only warns, or adds columns (a window), is no other meaning: scored.
    lenient_env = {
        "CLM_FEATURES__STALE_AFTER_DAYS": "5",
        "CLM_FEATURES__PURCHASE_WINDOWS_DAYS": "[30, 90, 180, 365]",
        # The same event types in another order, given twice: the same meaning.
        "CLM_STAGES__ADVOCACY_EVENT_TYPES": '["review", "referral", "review"]',
    }
    with mock.patch.dict(os.environ, lenient_env):
        lenient = settings(deployment)
    score_batch(BatchRequest(data=deployment.data, as_of=date(2025, 7, 1), out=out), lenient)
    assert len(pd.read_parquet(out)) > 500


def test_scores_before_the_champions_training_cutoff_are_warned_to_be_in_sample(
    deployment: Deployment, tmp_path: Path
) -> None:
    out = tmp_path / "s.parquet"
    early = BatchRequest(data=deployment.data, as_of=date(2025, 3, 1), out=out)
    with pytest.warns(UserWarning) as caught:
        score_batch(early, settings(deployment))
    said = [str(w.message) for w in caught if "in-sample" in str(w.message)]
    assert len(said) == 1 and re.fullmatch(
        r"--as-of 2025-03-01 is before the cutoff the champions were trained at \(clm-churn "
        r"v\d+ as of 2025-07-01, clm-stage v\d+ as of 2025-07-01, clm-clv v\d+ as of "
        r"2025-07-01\): they were fitted on outcomes after it, so these scores are in-sample "
        r"\(a backtest needs models trained as of 2025-03-01 or earlier\)",
        said[0],
    ), said
    assert len(pd.read_parquet(out)) > 500
    with warnings.catch_warnings():  # at the trained cutoff: nothing to say
        warnings.simplefilter("error")
        run(deployment, out)
    # A store for the service at that cutoff: the same warning.
    store = tmp_path / "online.db"
    env = {**deployment.env, "CLM_SERVING__ONLINE_STORE": f"sqlite:///{store}"}
    materialized = subprocess.run(
        [sys.executable, "-m", "clm", "features", "materialize", "--data", str(deployment.data),
         "--as-of", "2025-03-01"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert materialized.returncode == 0, materialized.stderr
    assert "--as-of 2025-03-01 is before the cutoff the champions were trained at" in (
        materialized.stderr
    )


def _refused_by_every_path(
    deployment: Deployment, folder: Path, tmp_path: Path, message: str,
    env: dict[str, str] | None = None,
) -> None:  # fmt: skip
    """clm score (local, and Spark before it starts) and clm features materialize (the
    service scores from its store) refuse this data (under these CLM_* variables), and
    write nothing."""
    out = tmp_path / "s.parquet"
    with mock.patch.dict(os.environ, env or {}):
        chosen = settings(deployment)
    for engine in ("local", "spark"):
        request = BatchRequest(data=folder, as_of=date(2025, 7, 1), out=out, engine=engine)
        with pytest.raises(DataError, match=message):
            score_batch(request, chosen)
    assert not out.exists()
    store = tmp_path / "online.db"
    env = {**deployment.env, **(env or {}), "CLM_SERVING__ONLINE_STORE": f"sqlite:///{store}"}
    refused = subprocess.run(
        [sys.executable, "-m", "clm", "features", "materialize", "--data", str(folder),
         "--as-of", AS_OF],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert re.search(message, refused.stderr), refused.stderr
    assert not store.exists()


def test_a_list_separated_by_semicolons_and_output_names_in_any_case(tmp_path: Path) -> None:
    from serving.batch import output_kind, read_customer_list

    listing = tmp_path / "List.CSV"
    listing.write_text("customer_id;segment\n007;a\nC2;b\n")
    frame = read_customer_list(listing)
    assert frame.to_dict("list") == {"customer_id": ["007", "C2"], "segment": ["a", "b"]}
    kinds = [output_kind(Path(n)) for n in ("s.parquet", "s.PQ", "s.CSV", "s.csv.gz", "s.txt")]
    assert kinds == [".parquet", ".parquet", ".csv", None, None]
