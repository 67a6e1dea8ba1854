"""``clm train`` options on a real MLflow store: tuning, horizons beyond the labelled history,
and data that deserves a warning."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from clm.settings import ClmSettings
from features import synthetic
from features.snapshots import build_snapshot
from features.sources import load
from training.jobs import TrainRequest, train

pytestmark = pytest.mark.slow


def _settings(store: Path) -> ClmSettings:
    # A dict, not a TrainingSettings: the CLM_TRAINING__* environment merges into it.
    return ClmSettings(training={"tracking_uri": f"sqlite:///{store}/mlflow.db"})  # type: ignore[arg-type]


def test_tuning_never_scores_the_evaluation_fold_and_refunds_only_customers_are_flagged(
    sample_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "data"
    shutil.copytree(sample_dir, folder)
    transactions = pd.read_parquet(folder / "transactions.parquet")
    refunds = pd.DataFrame(
        {
            "customer_id": ["R1", "R2", "R3"],
            "timestamp": pd.to_datetime(["2024-03-01", "2024-06-01", "2025-01-05"]),
            "amount": [-20.0, -5.0, -12.5],
        }
    )
    pd.concat([transactions, refunds], ignore_index=True).to_parquet(
        folder / "transactions.parquet"
    )
    request = TrainRequest(
        data=folder, as_of=date(2025, 7, 1), kinds=("churn", "clv"), tune=True, trials=3
    )
    result = train(request, _settings(tmp_path))
    assert any("3 customers have refunds but no purchase" in w for w in result.warnings)
    # A year's labels leave no training cutoff a year before another in this history: CLV is
    # trained untuned, and the warning says what tuning it would take.
    untuned = [w for w in result.warnings if w.startswith("--tune: the clv model")]
    assert len(untuned) == 1
    assert "training.folds >= 9 (now 4) and 1240 days of history" in untuned[0]
    assert untuned[0].endswith("it is trained untuned")
    clv_run = MlflowClient().get_run(result.models["clv"]["run_id"])
    assert not any(k.startswith("tuned_") for k in clv_run.data.params)
    client = MlflowClient()
    model_run = client.get_run(result.models["churn"]["run_id"])
    evaluation = model_run.data.params["evaluation_cutoff"]
    trials = client.search_runs(
        [model_run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{model_run.info.run_id}'",
    )
    assert len(trials) == 3
    horizon = timedelta(days=int(model_run.data.params["label_horizon_days"]))
    fitted = [date.fromisoformat(c) for c in model_run.data.params["training_cutoffs"].split(",")]
    assert len(fitted) == 3  # training.folds 4: the evaluation fold and three
    assert all(c + horizon <= date.fromisoformat(evaluation) for c in fitted)
    for trial in trials:
        scored = trial.data.params["scored_cutoffs"].split(",")
        assert scored and evaluation not in scored
        assert all(date.fromisoformat(c) < date.fromisoformat(evaluation) for c in scored)
        # Each scored cutoff's model was fitted only on cutoffs whose labels end by it.
        for step in trial.data.params["walk_forward"].split("; "):
            cutoff, fitted_on = step.split(" fitted on ")
            assert cutoff in scored
            for c in fitted_on.split(","):
                assert date.fromisoformat(c) + horizon <= date.fromisoformat(cutoff)
    # The winner is rebuilt from its full parameter set: every tuned value is in the model.
    tuned = {
        k.removeprefix("tuned_"): v
        for k, v in model_run.data.params.items()
        if k.startswith("tuned_")
    }
    assert set(tuned) >= {"max_depth", "learning_rate"}
    assert model_run.data.params["tuned"] == "True"
    assert model_run.data.params["tuning_metric"] == "log_loss"
    assert model_run.data.params["tuning_trials"] == str(len(trials))
    for key, value in tuned.items():
        assert model_run.data.params[f"xgb_{key}"] == value
    warnings = Path(client.download_artifacts(result.run_id, "warnings.txt")).read_text()
    assert "refunds but no purchase" in warnings


def test_a_horizon_longer_than_the_history_is_extrapolated_and_stays_calibrated(
    tmp_path: Path,
) -> None:
    # 273 days of history before as_of and a 273-day horizon: no full label window exists.
    data = synthetic.generate(9000, seed=21, start=date(2023, 1, 1), end=date(2024, 12, 1))
    folder = tmp_path / "data"
    synthetic.write(data, folder)
    as_of = date(2023, 10, 1)
    request = TrainRequest(
        data=folder, as_of=as_of, kinds=("churn", "clv"), horizon_days=273, clv_horizon_days=273
    )
    result = train(request, _settings(tmp_path))
    assert any("cannot label a 273-day horizon" in w for w in result.warnings)
    churn_run = MlflowClient().get_run(result.models["churn"]["run_id"])
    assert (
        "rescaled to 273 days by the dead-or-alive survival curve"
        in churn_run.data.params["method"]
    )
    assert churn_run.data.params["horizon_days"] == "273"

    # The truth, from the data after as_of (which training never read).
    truth_settings = ClmSettings(
        labels={"churn_horizon_days": 273, "stage_horizon_days": 273, "clv_horizon_days": 273}  # type: ignore[arg-type]
    )
    truth = build_snapshot(load(folder), as_of=as_of, settings=truth_settings, labels=True)
    features = truth.drop(columns=[c for c in truth.columns if c.startswith("label_")])
    features = features.drop(columns=["customer_id", "as_of"])
    churn = mlflow.pyfunc.load_model("models:/clm-churn@champion").predict(features)
    assert abs(churn["churn_probability"].mean() - truth["label_churned"].mean()) < 0.05
    clv = mlflow.pyfunc.load_model("models:/clm-clv@champion").predict(features)
    predicted, actual = clv["expected_purchases"].mean(), truth["label_purchases"].mean()
    assert abs(predicted - actual) / actual < 0.25
    assert np.corrcoef(clv["expected_spend"], truth["label_spend"])[0, 1] > 0.5


def test_tuning_without_two_purged_training_cutoffs_is_refused_before_any_run(
    sample_dir: Path, tmp_path: Path
) -> None:
    from clm.errors import DataError

    settings = ClmSettings(
        training={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "folds": 2}  # type: ignore[arg-type]
    )
    request = TrainRequest(
        data=sample_dir, as_of=date(2025, 7, 1), kinds=("churn",), tune=True, trials=2
    )
    with pytest.raises(
        DataError,
        match=r"--tune: the churn model has no two training cutoffs at least 90 days apart .* "
        r"that takes training.folds >= 4 \(now 2\)$",  # its 912 days of history are enough
    ):
        train(request, settings)
    assert mlflow.search_runs(search_all_experiments=True).empty  # nothing was logged
    # Enough folds (the default 4), too little history: only the history is asked for.
    enough = ClmSettings(training={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"})  # type: ignore[arg-type]
    young = TrainRequest(
        data=sample_dir, as_of=date(2023, 9, 1), kinds=("churn",), tune=True, trials=2
    )
    with pytest.raises(
        DataError, match=r"that takes 390 days of history before --as-of \(it has 242\)$"
    ):
        train(young, enough)
