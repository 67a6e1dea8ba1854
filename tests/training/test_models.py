"""Model behaviour on the sample data: each model beats its baselines on the evaluation fold.

The folds are those of ``clm train`` (purged: the training cutoffs 60 days apart, the latest
one horizon before the evaluation fold); the metrics are computed by the same task code that
logs them to MLflow.
"""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from clm.settings import ClmSettings, LabelSettings
from features.snapshots import build_snapshots
from features.sources import load
from features.stages import STAGES
from training.jobs import choose_clv_family
from training.models.base import held_out_customers, validation_split
from training.models.churn import ChurnModel, survival_curve
from training.models.tabular import xgb_params
from training.splits import Folds, backtest_folds
from training.tasks import TASKS, make_estimator
from training.tune import tune, tuning_steps

AS_OF = date(2025, 7, 1)
SETTINGS = ClmSettings()


def _frames(folder: Path, horizon: int, folds: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and evaluation snapshots of backtest_folds (purged: every training label
    window ends by the evaluation fold)."""
    dataset = load(folder)
    folds = backtest_folds(
        first_day=date(2023, 1, 1), as_of=AS_OF, horizon_days=horizon,
        folds=folds, step_days=60, min_history_days=90,
    )  # fmt: skip
    labels = LabelSettings(
        churn_horizon_days=horizon, stage_horizon_days=horizon, clv_horizon_days=horizon
    )
    frame = build_snapshots(
        dataset, cutoffs=folds.cutoffs, settings=SETTINGS.model_copy(update={"labels": labels})
    )
    return frame[frame.as_of.isin(folds.training)], frame[frame.as_of == folds.evaluation]


@pytest.fixture(scope="module")
def short_frames(training_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frames(training_dir, 90)


@pytest.fixture(scope="module")
def churn_model(short_frames: tuple[pd.DataFrame, pd.DataFrame]) -> ChurnModel:
    train, fold = short_frames
    model = make_estimator("churn", 90, 90, SETTINGS, xgb_params(SETTINGS.training))
    # As the job fits it: BG/NBD (the baseline) on the customers of the fold it scores.
    model = TASKS["churn"].fit(model, train, fold.drop(columns=["label_churned"]))
    assert model.btyd_.bgnbd_.n_customers_ == (fold["purchase_days"] > 0).sum()
    return model  # type: ignore[no-any-return]


def test_churn_beats_recency_and_bgnbd_on_auc_and_log_loss(
    short_frames: tuple[pd.DataFrame, pd.DataFrame], churn_model: ChurnModel
) -> None:
    train, fold = short_frames
    result = TASKS["churn"].evaluate(churn_model, train, fold)
    for name in ("recency", "bgnbd"):
        baseline = result.baselines[name]
        assert result.metrics["auc"] > baseline["auc"] + 0.005, name
        assert result.metrics["log_loss"] < baseline["log_loss"] - 0.01, name
        # On the customers who had bought (the gate's), where ranking is harder.
        assert result.metrics["auc_buyers"] > baseline["auc_buyers"] + 0.01, name
        assert result.metrics["log_loss_buyers"] < baseline["log_loss_buyers"], name
    buyers = fold[fold["purchase_days"] > 0]
    assert result.metrics["base_rate_buyers"] == pytest.approx(buyers["label_churned"].mean())
    assert result.metrics["auc_buyers"] < result.metrics["auc"]
    # Calibrated: the mean probability is the churn rate of the fold, within 3 points.
    assert abs(result.metrics["mean_probability"] - result.metrics["base_rate"]) < 0.03


def test_longer_since_last_purchase_never_lowers_churn_risk(
    short_frames: tuple[pd.DataFrame, pd.DataFrame], churn_model: ChurnModel
) -> None:
    _, fold = short_frames
    buyers = fold[fold["purchase_days"] > 0].head(300)
    before = churn_model.churn_probability(buyers)
    later = buyers.assign(days_since_last_purchase=buyers["days_since_last_purchase"] + 60)
    assert np.all(churn_model.churn_probability(later) >= before - 1e-12)
    assert np.mean(churn_model.churn_probability(later) > before + 1e-6) > 0.1


def test_fits_validate_on_held_out_customers_and_never_fit_their_outcomes(
    short_frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, fold = short_frames
    cutoffs = sorted(set(train["as_of"]))
    assert len(cutoffs) == 3  # 60 days apart, 90-day labels
    split = validation_split(train, 90)
    latest = (train["as_of"] == cutoffs[-1]).to_numpy()
    held = held_out_customers(train["customer_id"], part=1)
    np.testing.assert_array_equal(split.valid, latest & held)
    assert 0.15 < split.valid.sum() / latest.sum() < 0.25
    assert not (split.fit & split.valid).any()
    # The other customers are fitted at every cutoff, the latest included.
    assert split.fit[~held].all()
    # A held-out customer's earlier row is fitted only when its 90-day labels end by the
    # latest cutoff: the one 60 days before is not, the one 120 days before is.
    as_of = train["as_of"].to_numpy()
    assert not split.fit[held & (as_of == cutoffs[1])].any()
    assert split.fit[held & (as_of == cutoffs[0])].all()
    # So their outcomes there play no part: with those labels reversed, the same model.
    hidden = held & (as_of == cutoffs[1])
    scrambled = train.copy()
    for column in [c for c in train.columns if c.startswith("label_")]:
        scrambled.loc[hidden, column] = scrambled.loc[hidden, column].to_numpy()[::-1]
    assert not scrambled["label_churned"].equals(train["label_churned"])
    params = xgb_params(SETTINGS.training)
    present = fold.drop(columns=["label_churned"])
    fits = [
        TASKS["churn"].fit(make_estimator("churn", 90, 90, SETTINGS, params), rows, present)
        for rows in (train, scrambled)
    ]
    np.testing.assert_array_equal(*(m.churn_probability(fold) for m in fits))
    # Reversing a validation customer's label at the latest cutoff changes the model.
    changed = train.copy()
    changed.loc[split.valid, "label_churned"] = 1 - changed.loc[split.valid, "label_churned"]
    other = TASKS["churn"].fit(make_estimator("churn", 90, 90, SETTINGS, params), changed, present)
    assert not np.array_equal(other.churn_probability(fold), fits[0].churn_probability(fold))
    # One cutoff: a fifth of the customers; no customer ids: every fifth row.
    single = train[latest]
    np.testing.assert_array_equal(validation_split(single, 90).valid, held[latest])
    rows = validation_split(single.drop(columns=["customer_id"]), 90)
    np.testing.assert_array_equal(rows.valid, np.arange(len(single)) % 5 == 0)
    np.testing.assert_array_equal(rows.fit, ~rows.valid)


def test_a_validation_fifth_too_small_or_of_one_class_falls_back_to_the_latest_cutoff() -> None:
    ids = [f"c{i}" for i in range(400)]
    X = pd.DataFrame(
        {"customer_id": ids * 2, "as_of": [date(2024, 1, 1)] * 400 + [date(2024, 6, 1)] * 400}
    )
    latest = (X["as_of"] == date(2024, 6, 1)).to_numpy()
    split = validation_split(X, 90)
    assert split.valid.sum() >= 50 and not (split.valid & ~latest).any()
    # A binary target of one class among the held-out rows: the whole latest cutoff instead.
    target = np.where(split.valid, 0, np.arange(len(X)) % 2)
    fallback = validation_split(X, 90, target)
    np.testing.assert_array_equal(fallback.valid, latest)
    np.testing.assert_array_equal(fallback.fit, ~latest)
    # Too few customers for 50 held-out rows: the same; with one cutoff, every fifth row.
    small = X[X["customer_id"].isin(ids[:60])].reset_index(drop=True)
    np.testing.assert_array_equal(
        validation_split(small, 90).valid, (small["as_of"] == date(2024, 6, 1)).to_numpy()
    )
    one = small[small["as_of"] == date(2024, 6, 1)].reset_index(drop=True)
    np.testing.assert_array_equal(validation_split(one, 90).valid, np.arange(len(one)) % 5 == 0)


def test_churn_model_follows_the_scikit_learn_contract(churn_model: ChurnModel) -> None:
    fresh = clone(churn_model)
    assert fresh.get_params()["label_horizon_days"] == 90
    with pytest.raises(NotFittedError):
        fresh.churn_probability(pd.DataFrame({"stage": ["purchase"]}))
    assert churn_model.calibration_ in ("isotonic", "sigmoid")
    assert set(churn_model.calibration_losses_) == {"isotonic", "sigmoid"}


def test_stage_model_beats_the_markov_chain_on_log_loss(
    short_frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, fold = short_frames
    model = make_estimator("stage", 90, 90, SETTINGS, xgb_params(SETTINGS.training))
    model.fit(train, train["label_next_stage"])
    result = TASKS["stage"].evaluate(model, train, fold)
    assert result.metrics["log_loss"] < result.baselines["markov"]["log_loss"] - 0.03
    assert result.metrics["macro_f1"] > result.baselines["markov"]["macro_f1"]
    output = model.predict_frame(fold.head(50))
    probabilities = output[[f"probability_{s}" for s in STAGES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert set(output["next_stage"]) <= set(STAGES)
    # Confusion matrix counts every evaluation customer once.
    assert np.sum(result.notes["confusion_matrix"]) == len(fold)


@pytest.fixture(scope="module")
def long_frames(training_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frames(training_dir, 365)


def test_clv_xgboost_beats_bgnbd_gamma_gamma_on_mae_and_gini(
    long_frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, fold = long_frames
    model = make_estimator("clv", 365, 365, SETTINGS, xgb_params(SETTINGS.training))
    # As the job fits it: BG/NBD x Gamma-Gamma on the customers at the cutoff it scores.
    TASKS["clv"].fit(model, train, fold.drop(columns=["label_purchases", "label_spend"]))
    result = TASKS["clv"].evaluate(model, train, fold)
    baseline = result.baselines["bgnbd_gamma_gamma"]
    # Measured with purged folds (trained on 2023-05-03 and 2023-07-02 only, scored on
    # 2024-07-01): 0.887 of the baseline's MAE, Gini 0.945 against 0.910.
    assert result.metrics["mae"] < 0.95 * baseline["mae"]
    assert result.metrics["normalized_gini"] > baseline["normalized_gini"] + 0.01
    output = model.predict_frame(fold)
    # The discounted margin is below margin x spend and above zero.
    assert np.all(output["clv"] <= SETTINGS.training.margin * output["expected_spend"] + 1e-9)
    assert np.all(output["clv"] >= 0)


def test_the_clv_family_is_chosen_without_the_evaluation_fold(
    short_frames: tuple[pd.DataFrame, pd.DataFrame],
    long_frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    params = xgb_params(SETTINGS.training)
    targets = ["label_purchases", "label_spend"]
    clv = TASKS["clv"]
    # 90-day CLV labels: the latest training cutoff is scored by a fit on the one whose labels
    # end by it.
    train, fold = short_frames
    model = clv.fit(make_estimator("clv", 90, 90, SETTINGS, params), train, fold)
    folds = Folds(tuple(sorted({*train["as_of"], *fold["as_of"]})), 90)
    chosen, compared = choose_clv_family(model, train, folds, SETTINGS, params)
    validation = folds.training[-1]
    fitted = folds.fitted_before(validation)
    assert fitted == (folds.training[0],)
    assert compared["chosen_on"].startswith(
        f"the training cutoff {validation} (fitted on {fitted[0]},"
    )
    scores = compared["metrics"]
    assert compared["chosen"] == min(scores, key=lambda name: scores[name]["mae"])
    assert (chosen is model) == (compared["chosen"] == "xgboost")
    assert scores["xgboost"]["mae"] != clv.metrics(model.predict_frame(fold), fold)["mae"]
    # 365-day labels on this history: no training cutoff lies a year before the latest, so
    # the candidates are scored on the customers they were not fitted on.
    train, fold = long_frames
    single = clv.fit(make_estimator("clv", 365, 365, SETTINGS, params), train, fold)
    year = Folds(tuple(sorted({*train["as_of"], *fold["as_of"]})), 365)
    assert len(year.training) == 2 and not year.fitted_before(year.training[-1])
    picked, said = choose_clv_family(single, train, year, SETTINGS, params)
    latest = year.training[-1]
    assert said["chosen_on"].startswith(f"a fifth of the customers at the training cutoff {latest}")
    held = train[(train["as_of"] == latest) & held_out_customers(train["customer_id"])]
    assert 0.15 < len(held) / (train["as_of"] == latest).sum() < 0.25
    scores = said["metrics"]
    assert said["chosen"] == min(scores, key=lambda name: scores[name]["mae"])
    assert picked.family == said["chosen"]
    assert (picked is single) == (said["chosen"] == "xgboost")
    # No candidate is fitted on a held-out customer: with the labels of their rows at the
    # other training cutoff reversed, the same figures.
    other = (train["as_of"] != latest).to_numpy() & held_out_customers(train["customer_id"])
    scrambled = train.copy()
    for target in targets:
        scrambled.loc[other, target] = scrambled.loc[other, target].to_numpy()[::-1]
    assert not scrambled[targets].equals(train[targets])
    assert choose_clv_family(single, scrambled, year, SETTINGS, params)[1] == said
    # The BTYD candidate is the XGBoost model's own BTYD part: as a BTYD fit on its rows.
    btyd = make_estimator("clv", 365, 365, SETTINGS, params).set_params(family="btyd")
    clv.fit(btyd, train, fold)
    twin = single.as_btyd()
    assert twin.family == "btyd" and single.family == "xgboost"
    pd.testing.assert_frame_equal(twin.predict_frame(fold), btyd.predict_frame(fold))
    assert not twin.predict_frame(fold).equals(single.predict_frame(fold))


def test_pruned_trials_end_killed_after_one_scored_cutoff(
    training_dir: Path, tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    train, fold = _frames(training_dir, 90, folds=5)
    folds = Folds((*sorted(train["as_of"].unique()), fold["as_of"].iloc[0]), 90)
    # Two scored cutoffs (the latest two, each fitted on those 90 days or more before it): a
    # trial can be stopped after the first.
    assert len(tuning_steps(folds)) == 2
    metric = TASKS["churn"].tune_metric
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        with mlflow.start_run() as parent:
            tune("churn", train, folds, 90, SETTINGS, 8, xgb_params(SETTINGS.training))
        client = MlflowClient()
        trials = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        histories = {
            run.info.run_id: client.get_metric_history(run.info.run_id, metric) for run in trials
        }
    finally:
        mlflow.set_tracking_uri(previous)
    assert len(trials) == 8
    pruned = [run for run in trials if run.data.tags.get("optuna.state") == "pruned"]
    assert pruned  # measured with this seed: some of the trials after the 3 startup ones
    for run in trials:
        steps = [point.step for point in histories[run.info.run_id]]
        if run in pruned:
            assert run.info.status == "KILLED" and steps == [1]
        else:
            assert run.info.status == "FINISHED" and steps == [1, 2]


def test_survival_curve_passes_through_both_points_and_keeps_the_dead() -> None:
    u = np.array([0.9, 0.6, 0.5, 0.5, 1.0])
    v = np.array([0.85, 0.45, 0.25, 0.2, 1.0])  # the 4th has a rising hazard (v < u**2)
    assert survival_curve(u, v, 1.0) == pytest.approx(v)
    assert survival_curve(u, v, 0.5)[:3] == pytest.approx(u[:3])  # through S(h/2) = u
    assert survival_curve(u, v, 0.0) == pytest.approx(np.ones(5))
    # Far out only the dead share is left: pi = (v - u**2) / ((1 - u)**2 + v - u**2).
    dead = (v[:2] - u[:2] ** 2) / ((1 - u[:2]) ** 2 + v[:2] - u[:2] ** 2)
    assert survival_curve(u, v, 200.0)[:2] == pytest.approx(dead, abs=1e-6)
    assert survival_curve(u, v, 200.0)[2] == pytest.approx(0.0, abs=1e-6)  # pi = 0: Poisson
    assert survival_curve(u, v, 2.0)[3] == pytest.approx(0.2**2)  # clipped to pure Poisson
    assert survival_curve(u, v, 3.0)[4] == 1.0  # never buys
    longer = [survival_curve(u, v, r) for r in (1.0, 1.5, 2.0, 3.0)]
    assert all((a >= b).all() for a, b in itertools.pairwise(longer))
    # The two calibrated apart disagree (u < v): the curve still meets the trained horizon's
    # own prediction and falls with the horizon on both sides of it (no jump at h).
    u, v = np.array([0.6, 0.3]), np.array([0.8, 0.3])
    ratios = (0.05, 0.5, 0.9, 0.99, 1.0, 1.01, 1.1, 2.0)
    curve = np.array([survival_curve(u, v, r) for r in ratios])
    assert curve[4] == pytest.approx(v)
    assert np.all(np.diff(curve, axis=0) <= 1e-12)
    # The first: u raised to v, so S is v at every horizon (no rounding noise at short ones).
    assert curve[:, 0] == pytest.approx(np.full(len(ratios), 0.8), abs=1e-12)


def test_churn_scores_have_xgboosts_exact_contributions_from_the_tables(
    churn_model: ChurnModel, short_frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    import xgboost as xgb

    from training.models import treeshap
    from training.models.tabular import feature_frame

    _, evaluation = short_frames
    assert treeshap.explainer(churn_model.booster_) is not None  # the tables are used
    assert treeshap.approx_explainer(churn_model.booster_) is not None
    matrix = churn_model.encoder_.transform(feature_frame(evaluation))
    for approx in (False, True):
        probability, contributions = churn_model.scores(
            evaluation, matrix, approx_contributions=approx
        )
        expected = churn_model.booster_.predict(
            xgb.DMatrix(matrix), pred_contribs=True, approx_contribs=approx
        )
        np.testing.assert_allclose(contributions, expected, atol=2e-5)
        np.testing.assert_allclose(
            probability, churn_model.churn_probability(evaluation), atol=1e-6
        )


def test_a_cutoff_too_early_for_bgnbd_takes_the_latest_cutoffs_fit_with_a_warning(
    long_frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, fold = long_frames
    latest = train["as_of"].max()
    # The earlier cutoff's customers as if nobody had bought twice yet: BG/NBD cannot be fitted.
    early = train["as_of"] != latest
    once = train.copy()
    once.loc[early, "repeat_purchase_days"] = 0
    once.loc[early, "days_between_first_and_last_purchase"] = 0.0
    model = make_estimator("clv", 365, 365, SETTINGS, xgb_params(SETTINGS.training))
    with pytest.warns(RuntimeWarning) as caught:
        TASKS["clv"].fit(model, once, fold)
    said = [str(w.message) for w in caught if "no customer has a repeat purchase" in str(w.message)]
    earlier = train.loc[early, "as_of"].iloc[0]
    assert said == [
        f"the CLV model's BTYD columns at the cutoff {earlier}: cannot fit BG/NBD: no customer "
        "has a repeat purchase; the latest cutoff's fit is used"
    ]
    assert np.isfinite(model.predict_frame(fold)["expected_spend"]).all()


def test_isotonic_calibration_is_never_certain() -> None:
    from training.models.churn import apply_calibrator, fit_calibrator

    raw = np.linspace(0.01, 0.99, 200)
    y = (raw > 0.5).astype(int)  # the low half never churned, the high half always did
    calibrator = fit_calibrator("isotonic", raw, y)
    p = apply_calibrator(calibrator, np.array([0.0, 0.2, 0.8, 1.0]))
    assert p[0] == pytest.approx(1 / 202) and p[-1] == pytest.approx(1 - 1 / 202)
    assert (p > 0).all() and (p < 1).all() and np.all(np.diff(p) >= 0)
