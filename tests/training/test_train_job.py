"""``clm train`` end to end on a real MLflow store (SQLite in a temp dir): runs, registry,
promotion gate, pyfunc, rollback, failed runs and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from clm.errors import DataError
from clm.settings import ClmSettings
from features.snapshots import build_snapshot
from features.sources import load
from tests.helpers import tx, write_tables
from training.jobs import TrainRequest, train
from training.models.history import BtydModel
from training.registry import champion_version, promote, rollback

pytestmark = pytest.mark.slow

AS_OF = date(2025, 7, 1)


def _settings(store: Path) -> ClmSettings:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    # A dict, not a TrainingSettings: the CLM_TRAINING__* environment merges into it.
    return ClmSettings(training={"tracking_uri": uri, "n_estimators": 150})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def first_run(store: Path, sample_dir: Path) -> dict:
    result = train(TrainRequest(data=sample_dir, as_of=AS_OF), _settings(store))
    return {"result": result, "settings": _settings(store)}


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_three_champions_with_metrics_baselines_plots_and_inputs(first_run: dict) -> None:
    result = first_run["result"]
    client = MlflowClient()
    for name in ("clm-churn", "clm-stage", "clm-clv"):
        assert champion_version(name) == "1"
        assert str(client.get_model_version_by_alias(name, "challenger").version) == "1"
    churn = client.get_run(result.models["churn"]["run_id"])
    metrics = churn.data.metrics
    for key in ("auc", "log_loss", "baseline_recency_auc", "baseline_bgnbd_log_loss",
                "auc_buyers", "baseline_recency_auc_buyers"):  # fmt: skip
        assert key in metrics
    assert metrics["auc"] > metrics["baseline_recency_auc"]
    assert metrics["auc_buyers"] > metrics["baseline_recency_auc_buyers"]
    assert churn.data.params["evaluation_cutoff"] == "2025-04-02"
    assert "calibrated xgboost trained on 90-day labels" in churn.data.params["method"]
    artifacts = _artifacts(client, churn.info.run_id)
    for plot in ("roc_pr", "calibration", "lift_gain", "shap_summary"):
        assert f"plots/{plot}.png" in artifacts
    assert {i.dataset.name.split(" ")[0] for i in churn.inputs.dataset_inputs} == {
        "churn-training", "churn-evaluation",
    }  # fmt: skip
    stage = _artifacts(client, result.models["stage"]["run_id"])
    assert {"plots/stage_confusion.png", "plots/stage_transitions.png"} <= stage
    clv = client.get_run(result.models["clv"]["run_id"])
    assert "plots/clv_deciles.png" in _artifacts(client, clv.info.run_id)
    for key in ("normalized_gini", "top_decile_capture", "decile_calibration_error", "spearman"):
        assert key in clv.data.metrics
    parent = client.get_run(result.run_id)
    assert any(k.startswith("time_") for k in parent.data.metrics)
    # Each model beats its baselines here, so no warning says otherwise.
    assert not [w for w in result.warnings if "does not beat" in w], result.warnings


def test_a_model_that_loses_to_a_baseline_is_said_to() -> None:
    from training.jobs import _losing_to_baselines

    baselines = {"markov": {"log_loss": 0.5261}, "uniform": {"log_loss": 1.79}}
    assert _losing_to_baselines("stage", {"log_loss": 0.6718}, baselines) == [
        "stage: the model does not beat the markov baseline on log_loss (0.6718 against "
        "0.5261 on the evaluation fold)"
    ]
    assert _losing_to_baselines("stage", {"log_loss": 0.2}, baselines) == []
    # Churn is gated on buyers; without that figure on a side, on every customer's AUC.
    said = _losing_to_baselines("churn", {"auc": 0.9437}, {"bgnbd": {"auc": 0.9502}})
    assert said == [
        "churn: the model does not beat the bgnbd baseline on auc (0.9437 against 0.9502 on "
        "the evaluation fold)"
    ]


def test_the_served_clv_model_fits_bgnbd_on_the_customers_at_as_of(
    first_run: dict, sample_dir: Path
) -> None:
    clv = mlflow.pyfunc.load_model("models:/clm-clv@champion").unwrap_python_model().estimator
    settings = ClmSettings()
    today = build_snapshot(load(sample_dir), as_of=AS_OF, settings=settings)
    fitted = BtydModel().fit(today, np.zeros(len(today)), label_horizon_days=365)
    # To the optimiser's tolerance: the snapshot's row order may differ between two builds.
    assert clv.btyd_.bgnbd_.params_ == pytest.approx(fitted.bgnbd_.params_, rel=1e-4)
    assert clv.btyd_.gamma_gamma_.params_ == pytest.approx(fitted.gamma_gamma_.params_, rel=1e-4)
    assert clv.btyd_.bgnbd_.n_customers_ == today["purchase_days"].gt(0).sum()
    # Not the customers of the evaluation fold, a year earlier, which the evaluated model used.
    run = MlflowClient().get_run(first_run["result"].models["clv"]["run_id"])
    fold = date.fromisoformat(run.data.params["evaluation_cutoff"])
    assert fold == date(2024, 7, 1)
    earlier = build_snapshot(load(sample_dir), as_of=fold, settings=settings)
    stale = BtydModel().fit(earlier, np.zeros(len(earlier)), label_horizon_days=365)
    assert clv.btyd_.bgnbd_.params_ != pytest.approx(stale.bgnbd_.params_, rel=0.05)


def test_pyfunc_returns_probabilities_and_takes_a_horizon(
    first_run: dict, sample_dir: Path
) -> None:
    from features.snapshots import build_snapshot
    from features.sources import load

    frame = build_snapshot(load(sample_dir), as_of=AS_OF, settings=ClmSettings())
    features = frame.drop(columns=["customer_id", "as_of"]).head(400)
    churn = mlflow.pyfunc.load_model("models:/clm-churn@champion")
    p90 = churn.predict(features)["churn_probability"].to_numpy()
    assert p90.min() >= 0 and p90.max() <= 1
    assert len(np.unique(p90)) > 20  # probabilities, not 0/1 labels
    p365 = churn.predict(features, params={"horizon_days": 365})["churn_probability"].to_numpy()
    assert np.all(p365 <= p90 + 1e-9)  # no purchase in a year implies none in 90 days
    assert p365.mean() < p90.mean() - 0.01
    for bad in (0, -5):  # no answer for these: refused, not the trained horizon or 1.0
        with pytest.raises(Exception, match=r"horizon_days: .* whole number of days >= 1"):
            churn.predict(features, params={"horizon_days": bad})
    stage = mlflow.pyfunc.load_model("models:/clm-stage@champion").predict(features)
    assert {"next_stage", "probability_advocacy", "probability_churned"} <= set(stage.columns)
    clv = mlflow.pyfunc.load_model("models:/clm-clv@champion").predict(features)
    assert list(clv.columns) == ["expected_purchases", "expected_spend", "clv"]
    assert (clv["expected_spend"] >= 0).all()


def test_a_retrain_on_the_same_data_is_a_challenger_not_a_champion(
    first_run: dict, sample_dir: Path
) -> None:
    again = train(
        TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), first_run["settings"]
    )
    outcome = again.models["churn"]
    assert outcome["version"] == "2" and outcome["promoted"] is False
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("clm-churn", "challenger").version) == "2"
    assert champion_version("clm-churn") == "1"
    decision = json.loads(
        Path(client.download_artifacts(outcome["run_id"], "promotion.json")).read_text()
    )
    assert decision["gate_metric"] == "auc_buyers"
    assert decision["champion_metrics"]["auc_buyers"] == pytest.approx(
        decision["challenger_metrics"]["auc_buyers"]
    )
    assert "does not beat" in decision["reason"]
    # By hand: promote version 2, then roll back to 1; nothing before 1.
    promote("clm-churn", "2")
    assert champion_version("clm-churn") == "2"
    assert rollback("clm-churn") == "1"
    assert champion_version("clm-churn") == "1"
    with pytest.raises(Exception, match="no previous champion"):
        rollback("clm-churn")


def test_a_failed_run_leaves_the_champion_alone(first_run: dict, tmp_path: Path) -> None:
    # Every customer buys once in early 2024 and never again: churn labels are all 1.
    rows = [tx(f"C{i}", f"2024-01-{1 + i % 28:02d}", 10.0 + i) for i in range(60)]
    rows += [tx("late", "2025-06-30", 5.0)]
    folder = write_tables(tmp_path / "one-class", transactions=rows)
    with pytest.raises(ValueError, match="single class"):
        train(
            TrainRequest(data=folder, as_of=date(2025, 6, 1), kinds=("churn",)),
            first_run["settings"],
        )
    assert champion_version("clm-churn") == "1"
    runs = mlflow.search_runs(filter_string="attributes.status = 'FAILED'")
    assert len(runs) >= 1


def test_bad_cutoffs_are_clear_errors(first_run: dict, sample_dir: Path) -> None:
    settings = first_run["settings"]
    with pytest.raises(DataError, match=r"as_of 2027-01-01 is after the last record"):
        train(TrainRequest(data=sample_dir, as_of=date(2027, 1, 1)), settings)
    with pytest.raises(DataError, match=r"not after the first record"):
        train(TrainRequest(data=sample_dir, as_of=date(2022, 1, 1)), settings)
    # Both minimums: for the horizon, and for the shortest labels that are extrapolated.
    with pytest.raises(
        DataError,
        match=r"too little history for a 90-day horizon .* at least 270 days; or at least 118 "
        r"days to train on 14-day labels and extrapolate to 90 days$",
    ):
        train(TrainRequest(data=sample_dir, as_of=date(2023, 4, 1)), settings)


def test_models_cli_lists_promotes_and_rolls_back(first_run: dict, store: Path) -> None:
    env = {"CLM_TRAINING__TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "PATH": ""}

    def clm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clm", *args], capture_output=True, text=True, env=env
        )

    listing = clm("models", "list")
    assert listing.returncode == 0, listing.stderr
    assert "clm-churn" in listing.stdout and "champion" in listing.stdout
    # One line a version, uncut off a terminal: its fold, cutoff and horizon beside the metric.
    churn = next(line for line in listing.stdout.splitlines() if "clm-churn" in line)
    cells = [cell.strip() for cell in churn.strip("│ ").split("│")]
    assert cells[3] == "auc_buyers" and cells[5:8] == ["2025-04-02", "2025-07-01", "90"]
    assert float(cells[4]) > 0.5
    missing = clm("models", "promote", "clm-churn", "99")
    assert missing.returncode == 1 and "has no version 99" in missing.stderr
    unknown = clm("models", "rollback", "clm-nothing")
    assert unknown.returncode == 1 and "is not one of clm-churn" in unknown.stderr
    # The champion already (however the other tests in this store ran): nothing changes.
    promoted = clm("models", "promote", "churn", "1")
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == "clm-churn version 1 is @champion already: nothing changed"


def test_models_show_prints_a_version_beside_its_baselines(first_run: dict, store: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {"CLM_TRAINING__TRACKING_URI": uri, "PATH": "", "COLUMNS": "200"}

    def clm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clm", *args], capture_output=True, text=True, env=env
        )

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name, gate in (("clm-churn", "auc_buyers"), ("clm-clv", "relative_mae")):
        champion = client.get_model_version_by_alias(name, "champion")
        run = client.get_run(champion.run_id)
        shown = clm("models", "show", name.removeprefix("clm-"))  # the champion by default
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert f"{name} version {champion.version}" in out and champion.run_id in out
        assert run.data.params["evaluation_cutoff"] in out
        assert run.data.tags["clm.decision"][:60] in " ".join(out.split())
        row = next(line for line in out.splitlines() if f"{gate} (gate)" in line)
        cells = [cell.strip() for cell in row.strip("│ ").split("│")]
        metrics = run.data.metrics
        assert cells[1] == f"{metrics[gate]:.4f}"
        # Each baseline's figure under its name (baseline_x_relative_mae is not mae's).
        baselines = sorted(
            k[len("baseline_") : -len(gate) - 1]
            for k in metrics
            if k.startswith("baseline_") and k.endswith(f"_{gate}")
        )
        header = next(line for line in out.splitlines() if "baseline" in line and "metric" in line)
        named = [cell.strip() for cell in header.strip("│┃ ").replace("┃", "│").split("│")]
        assert baselines and named[2:] == [f"baseline {b}" for b in baselines]
        assert cells[2:] == [f"{metrics[f'baseline_{b}_{gate}']:.4f}" for b in baselines]
        same = clm("models", "show", name, f"0{champion.version}")  # as the registry reads it
        assert same.returncode == 0 and same.stdout == out
    missing = clm("models", "show", "clm-clv", "99")
    assert missing.returncode == 1 and "has no version 99" in missing.stderr


def test_a_job_that_fails_part_way_moves_no_champion(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.jobs

    settings = _settings(tmp_path)
    real = training.jobs._train_one

    def stage_fails(kind: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kind == "stage":
            raise RuntimeError("the stage model failed")
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(training.jobs, "_train_one", stage_fails)
    with pytest.raises(RuntimeError, match="the stage model failed"):
        train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn", "stage")), settings)
    client = MlflowClient()
    # The churn model passed its gate (a first version) and was registered, not promoted.
    assert champion_version("clm-churn") is None
    version = client.get_model_version_by_alias("clm-churn", "challenger")
    tags = client.get_run(version.run_id).data.tags
    assert tags["clm.promoted"] == "False (another model failed)"
    assert tags["clm.champion"] == "no (never served)"
    monkeypatch.setattr(training.jobs, "_train_one", real)
    done = train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), settings)
    assert done.models["churn"]["promoted"] is True
    assert champion_version("clm-churn") == done.models["churn"]["version"]


def test_a_champion_that_cannot_score_the_new_features_or_their_meaning_is_not_compared(
    sample_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    # Trained before the next job's evaluation fold (2025-04-02), so it is scored on it.
    train(TrainRequest(data=sample_dir, as_of=date(2025, 3, 1), kinds=("churn",)), settings)
    other = settings.model_copy(
        update={
            "features": settings.features.model_copy(update={"purchase_windows_days": [30, 180]})
        }
    )
    again = train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), other)
    outcome = again.models["churn"]
    assert outcome["promoted"] is False
    assert outcome["reason"] == (
        "champion v1 needs features purchases_90d, spend_90d, purchases_365d, spend_365d that "
        "this run's snapshot lacks "
        "(were the feature settings changed since it was trained?); not compared, so not "
        "promoted: promote v2 with clm models promote if it should serve"
    )
    # The same features under another meaning (other customers are 'churned'): not compared.
    _not_compared_under_other_stage_rules(sample_dir, settings)


def _not_promoted_v1_stays(result: Any, reason: str) -> None:
    """The churn challenger of ``result`` was not promoted, for ``reason``; v1 still serves."""
    outcome = result.models["churn"]
    assert outcome["promoted"] is False
    assert outcome["reason"] == reason
    assert champion_version("clm-churn") == "1"


def _not_compared_under_other_stage_rules(sample_dir: Path, settings: ClmSettings) -> None:
    """A churn retrain at AS_OF with 90 days of inactivity for churned, against champion v1
    of 180 (and a v2 that did not serve): v3, not compared and not promoted."""
    other = settings.model_copy(
        update={"stages": settings.stages.model_copy(update={"churn_inactivity_days": 90})}
    )
    again = train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), other)
    _not_promoted_v1_stays(
        again,
        (
            "champion v1 was trained with stages.churn_inactivity_days = 180 (now 90): its "
            "features meant something else; not compared, so not promoted: promote v3 with clm "
            "models promote if it should serve"
        ),
    )


def test_each_model_run_carries_its_own_warnings_and_the_data_s(
    sample_dir: Path, tmp_path: Path
) -> None:
    # A year and a half of history: the 90-day churn labels fit, the 365-day CLV ones do not.
    request = TrainRequest(data=sample_dir, as_of=date(2024, 7, 1), kinds=("churn", "clv"))
    result = train(request, _settings(tmp_path))
    clv_only = [w for w in result.warnings if "cannot label a 365-day horizon" in w]
    assert len(clv_only) == 1
    client = MlflowClient()
    tags = {k: client.get_run(m["run_id"]).data.tags for k, m in result.models.items()}
    assert clv_only[0][:200] in tags["clv"]["clm.warnings"]
    assert "365-day" not in tags["churn"].get("clm.warnings", "")
    # Each said once, though both models may raise the same one (churn and stage on 90 days).
    assert len(result.warnings) == len(set(result.warnings))
    churn_only = [w for w in result.warnings if "90-day labels" in w]
    assert all(w not in tags["clv"].get("clm.warnings", "") for w in churn_only)


def test_a_challenger_for_another_horizon_is_not_compared_and_promoted_by_hand_is_said(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clm.model_commands import promote_model, rollback_model

    settings = _settings(tmp_path)
    train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), settings)
    shorter = train(
        TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",), horizon_days=60), settings
    )
    _not_promoted_v1_stays(
        shorter,
        (
            "champion v1 predicts a 90-day horizon, the challenger 60 days: another prediction "
            "(promoting it moves what the scores answer for); not compared, so not promoted: "
            "promote v2 with clm models promote if it should serve"
        ),
    )
    # On the same --as-of under other stage rules: the fold (customers and churn outcomes)
    # is the same, but the champion's logged metrics are of features that meant otherwise.
    _not_compared_under_other_stage_rules(sample_dir, settings)
    # By hand: the horizon change is said, a running service told to restart, and the runs'
    # clm.champion tags follow the alias (the MLflow UI shows which run serves).
    client = MlflowClient()

    def marks() -> list[str]:
        runs = [client.get_model_version("clm-churn", v).run_id for v in ("1", "2")]
        return [client.get_run(r).data.tags.get("clm.champion", "-").split(" ")[0] for r in runs]

    assert marks() == ["yes", "no"]  # v2 never served, and its run says so
    run = client.get_model_version("clm-churn", "2").run_id
    assert client.get_run(run).data.tags["clm.champion"] == "no (never served)"
    promote_model("churn", "2", settings)
    printed = capsys.readouterr().out
    assert "clm-churn version 2 is now @champion" in printed
    assert (
        "note: version 2 predicts a 60-day horizon, version 1 90 days: scores now answer for 60 days"
        in " ".join(printed.split())
    )
    assert "a running clm serve keeps the champions it loaded: restart it" in printed
    assert marks() == ["no", "yes"]
    rollback_model("churn", settings)
    printed = " ".join(capsys.readouterr().out.split())
    assert "@champion is back on version 1" in printed and "answer for 90 days" in printed
    assert marks() == ["yes", "no"]
    # By hand, a churn model of other stage rules (v3) beside a stage champion of the
    # defaults: said, as scoring would refuse the pair under either setting.
    train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("stage",)), settings)
    promote_model("churn", "3", settings)
    printed = " ".join(capsys.readouterr().out.split())
    assert (
        "note: version 3 was trained with stages.churn_inactivity_days = 90 (clm-stage v1: 180): "
        "clm score and the service refuse champions of other settings until they agree"
    ) in printed


def test_a_champion_logged_without_the_gate_metric_is_compared_on_the_fallback(
    sample_dir: Path, tmp_path: Path
) -> None:
    import sqlite3

    settings = _settings(tmp_path)
    first = train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), settings)
    # As a version logged before churn was gated on auc_buyers: its run lacks the metric.
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        for table in ("metrics", "latest_metrics"):
            con.execute(f"DELETE FROM {table} WHERE key LIKE '%auc_buyers'")
    run = MlflowClient().get_run(first.models["churn"]["run_id"])
    assert "auc" in run.data.metrics and "auc_buyers" not in run.data.metrics
    # Evaluated on this very fold, so its logged metrics are what it is compared on.
    again = train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), settings)
    outcome = again.models["churn"]
    assert outcome["promoted"] is False  # the same model: a tie never promotes
    auc = run.data.metrics["auc"]
    assert outcome["reason"] == (
        f"challenger does not beat champion v1 on auc: {auc:.4f} against {auc:.4f} (both on "
        "the evaluation fold at 2025-04-02; the champion's from its own run; champion v1 has "
        "no auc_buyers)"
    )
    assert champion_version("clm-churn") == "1"


def test_a_retrain_a_month_later_scores_the_champion_fitted_without_the_new_fold(
    sample_dir: Path, tmp_path: Path
) -> None:
    import sqlite3

    settings = _settings(tmp_path)
    first = train(TrainRequest(data=sample_dir, as_of=date(2025, 6, 1), kinds=("churn",)), settings)
    client = MlflowClient()
    run = client.get_run(first.models["churn"]["run_id"])
    # v1 was evaluated on 2025-03-03 by a model fitted on cutoffs whose labels end by then;
    # the served v1 was refitted on labels to 2025-06-01, 60 days into the new fold's
    # (2025-04-02 to 2025-07-01). The evaluated model is scored: neither side saw the fold.
    fitted = max(run.data.params["training_cutoffs"].split(","))
    labels_end = date.fromisoformat(fitted) + timedelta(days=90)
    assert labels_end <= date(2025, 4, 2)  # by the new fold's cutoff
    assert run.data.tags["clm.evaluated_model"].startswith("models:/")

    def retrain() -> dict:
        outcome = train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), settings)
        decision = json.loads(
            Path(
                client.download_artifacts(outcome.models["churn"]["run_id"], "promotion.json")
            ).read_text()
        )
        figures = (
            f"{decision['challenger_metrics']['auc_buyers']:.4f} against "
            f"{decision['champion_metrics']['auc_buyers']:.4f}"
        )
        assert (
            f"champion v1 on auc_buyers: {figures} (both on the evaluation fold"
            in (outcome.models["churn"]["reason"])
        )
        assert outcome.models["churn"]["promoted"] == (
            decision["challenger_metrics"]["auc_buyers"]
            > decision["champion_metrics"]["auc_buyers"]
        )
        return decision

    blind = retrain()
    assert blind["champion_measured_on"] == (
        "both on the evaluation fold at 2025-04-02, neither fitted on its outcomes: the "
        f"champion as its own run evaluated it (fitted on cutoffs up to {fitted}), as the "
        "served one's training labels reach 60 days into the fold's label window"
    )
    # Measured anew on the challenger's fold, not taken from v1's own run.
    logged = run.data.metrics["auc_buyers"]
    assert blind["champion_metrics"]["auc_buyers"] != pytest.approx(logged)
    if champion_version("clm-churn") != "1":
        promote("clm-churn", "1")
    # A version logged before its evaluated model was kept: the served one is scored, and
    # the overlap (which can only favour it) is said.
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        con.execute("DELETE FROM tags WHERE key = 'clm.evaluated_model' AND run_uuid = ?",
                    (run.info.run_id,))  # fmt: skip
    served = retrain()
    assert served["champion_measured_on"] == (
        "both on the evaluation fold at 2025-04-02; the champion's training labels reach 60 "
        "days into the fold's label window, which can only favour it"
    )
    # The served model, fitted on the fold's first 60 days of outcomes, scores otherwise.
    assert served["champion_metrics"]["auc_buyers"] != pytest.approx(
        blind["champion_metrics"]["auc_buyers"]
    )


def test_a_backfill_is_not_compared_with_a_champion_that_has_seen_its_fold(
    sample_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), settings)
    older = train(TrainRequest(data=sample_dir, as_of=date(2025, 3, 1), kinds=("churn",)), settings)
    _not_promoted_v1_stays(
        older,
        (
            "champion v1 was fitted on cutoffs up to 2025-04-02, not before the evaluation fold at "
            "2024-12-01: it has seen the fold; not compared, so not promoted: promote v2 with clm "
            "models promote if it should serve"
        ),
    )


def test_a_champion_evaluated_on_other_data_at_the_same_dates_is_not_compared(
    sample_dir: Path, tmp_path: Path
) -> None:
    import pandas as pd

    settings = _settings(tmp_path)
    train(TrainRequest(data=sample_dir, as_of=AS_OF, kinds=("churn",)), settings)
    # Another business (or another export) trained into the same registry at the same as_of:
    # its fold has the same dates and other rows.
    other = tmp_path / "other"
    other.mkdir()
    transactions = pd.read_parquet(sample_dir / "transactions.parquet")
    transactions.iloc[::3].to_parquet(other / "transactions.parquet")
    again = train(TrainRequest(data=other, as_of=AS_OF, kinds=("churn",)), settings)
    outcome = again.models["churn"]
    assert outcome["promoted"] is False
    assert outcome["reason"].startswith(
        "champion v1 was evaluated on the same fold dates (2025-04-02) in other data (from "
        f"{sample_dir.resolve()}; fold key "
    )
    assert outcome["reason"].endswith(
        ") and was fitted on that cutoff; not compared, so not promoted: promote v2 with clm "
        "models promote if it should serve"
    )
    assert champion_version("clm-churn") == "1"
