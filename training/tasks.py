"""The three model kinds: their targets, estimators, metrics, baselines and plots.

Each task evaluates an estimator fitted on the training folds on the evaluation fold, next
to its baselines fitted on the same training folds, and returns what the run logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clm.settings import ClmSettings
from features.stages import STAGES
from training import plots
from training.baselines import MarkovStageModel, RecencyChurnBaseline
from training.evaluate import binary_metrics, confusion_matrix, multiclass_metrics, value_metrics
from training.models.churn import ChurnModel
from training.models.clv import ClvModel
from training.models.stage import StageModel
from training.models.tabular import feature_frame

__all__ = ["TASKS", "Evaluation", "Task", "make_estimator"]


@dataclass
class Evaluation:
    """Metrics of the model and of each baseline on one fold, and the plots."""

    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _labels(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        raise ValueError(f"snapshot has no {column} column: build it with labels")
    return frame[column]


# --- churn ---------------------------------------------------------------------------------


def _churn_target(frame: pd.DataFrame) -> Any:
    return _labels(frame, "label_churned").to_numpy(int)


def _churn_figures(y: np.ndarray, probability: np.ndarray, fold: pd.DataFrame) -> dict[str, float]:
    """binary_metrics on every customer, and with a ``_buyers`` suffix on those who bought
    before the cutoff: people who never bought rarely buy in the horizon, so they are easy to
    rank and lift every customer's AUC (the gate is on the buyers')."""
    out = binary_metrics(y, probability)
    buyers = (pd.to_numeric(fold["purchase_days"]) > 0).to_numpy()
    if len(np.unique(y[buyers])) == 2:
        out |= {f"{k}_buyers": v for k, v in binary_metrics(y[buyers], probability[buyers]).items()}
    return out


def _churn_metrics(output: pd.DataFrame, fold: pd.DataFrame) -> dict[str, float]:
    return _churn_figures(_churn_target(fold), output["churn_probability"].to_numpy(), fold)


def _churn_evaluate(model: Any, train: pd.DataFrame, fold: pd.DataFrame) -> Evaluation:
    y = _churn_target(fold)
    horizon = model.label_horizon_days
    scores = {
        "xgboost": model.churn_probability(fold, horizon),
        "recency": RecencyChurnBaseline().fit(train, _churn_target(train)).predict_proba(fold),
        "bgnbd": model.btyd_.probability_no_purchase(fold, horizon),
    }
    _, contributions = model.scores(fold.head(5000))
    values = model.encoder_.transform(feature_frame(fold.head(5000)))
    figures = {
        "roc_pr": plots.roc_pr_figure(y, scores),
        "calibration": plots.calibration_figure(y, scores),
        "lift_gain": plots.lift_gain_figure(y, scores),
        "shap_summary": plots.shap_summary_figure(
            contributions, model.encoder_.feature_names_, values
        ),
    }
    return Evaluation(
        metrics=_churn_figures(y, scores["xgboost"], fold),
        baselines={name: _churn_figures(y, scores[name], fold) for name in ("recency", "bgnbd")},
        figures=figures,
        notes={
            # These metrics are the evaluated model's; the served one, refitted on every
            # cutoff, chose its own calibration (its run's `method` parameter).
            "evaluated_model_calibration": model.calibration_,
            "evaluated_model_calibration_log_loss": model.calibration_losses_,
        },
    )


# --- stage ---------------------------------------------------------------------------------


def _stage_target(frame: pd.DataFrame) -> Any:
    return _labels(frame, "label_next_stage").astype(str).to_numpy(object)


def _stage_metrics(output: pd.DataFrame, fold: pd.DataFrame) -> dict[str, float]:
    proba = output[[f"probability_{s}" for s in STAGES]].to_numpy()
    return multiclass_metrics(_stage_target(fold), proba, STAGES)


def _stage_evaluate(model: Any, train: pd.DataFrame, fold: pd.DataFrame) -> Evaluation:
    y = _stage_target(fold)
    proba = model.stage_probabilities(fold, model.label_horizon_days)
    markov = MarkovStageModel(STAGES).fit(train["stage"].astype(str), _stage_target(train))
    markov_proba = markov.predict_proba(list(fold["stage"].astype(str)))
    predicted = np.asarray(STAGES, dtype=object)[proba.argmax(axis=1)]
    matrix = confusion_matrix(y, predicted, STAGES)
    figures = {
        "stage_confusion": plots.confusion_figure(
            matrix, STAGES, "Next stage: true (rows) vs predicted (columns)"
        ),
        "stage_transitions": plots.transition_heatmap_figure(
            markov.matrix_, STAGES, "Stage now (rows) to stage after the horizon (training folds)"
        ),
    }
    return Evaluation(
        metrics=multiclass_metrics(y, proba, STAGES),
        baselines={"markov": multiclass_metrics(y, markov_proba, STAGES)},
        figures=figures,
        notes={
            "confusion_matrix": matrix.tolist(),
            "transition_matrix": markov.matrix_.tolist(),
            "stages": list(STAGES),
        },
    )


# --- clv -----------------------------------------------------------------------------------


def _clv_target(frame: pd.DataFrame) -> Any:
    return frame[["label_purchases", "label_spend"]]


def _clv_metrics(output: pd.DataFrame, fold: pd.DataFrame) -> dict[str, float]:
    actual = _labels(fold, "label_spend").to_numpy(float)
    metrics = value_metrics(actual, output["expected_spend"].to_numpy())
    metrics["relative_mae"] = metrics["mae"] / max(abs(float(actual.mean())), 1e-9)
    purchases = value_metrics(fold["label_purchases"].to_numpy(float), output["expected_purchases"])
    metrics["purchases_mae"] = purchases["mae"]
    metrics["purchases_spearman"] = purchases["spearman"]
    return metrics


def _clv_evaluate(model: Any, train: pd.DataFrame, fold: pd.DataFrame) -> Evaluation:
    output = model.predict_frame(fold, model.label_horizon_days)
    # BG/NBD x Gamma-Gamma as the model fitted it (on the same rows and population).
    btyd_output = model.as_btyd().predict_frame(fold, model.label_horizon_days)
    actual = fold["label_spend"].to_numpy(float)
    figures = {
        "clv_deciles": plots.clv_decile_figure(
            actual,
            {
                model.family: output["expected_spend"].to_numpy(),
                "bgnbd_gamma_gamma": btyd_output["expected_spend"].to_numpy(),
            },
        )
    }
    return Evaluation(
        metrics=_clv_metrics(output, fold),
        baselines={"bgnbd_gamma_gamma": _clv_metrics(btyd_output, fold)},
        figures=figures,
    )


@dataclass(frozen=True)
class Task:
    """One model kind."""

    kind: str
    label_columns: tuple[str, ...]
    make: Callable[..., Any]
    target: Callable[[pd.DataFrame], Any]
    evaluate: Callable[[Any, pd.DataFrame, pd.DataFrame], Evaluation]
    metrics: Callable[[pd.DataFrame, pd.DataFrame], dict[str, float]]
    tune_metric: str
    # Has a BG/NBD part, fitted on the customers of the snapshot it scores (``fit(present=)``).
    fits_population: bool = False

    def fit(self, model: Any, rows: pd.DataFrame, scored: pd.DataFrame | None = None) -> Any:
        """``model`` fitted on ``rows``; a churn or CLV model's BG/NBD part on ``scored``, the
        snapshot it is going to score (features only: see ClvModel.fit)."""
        if self.fits_population and scored is not None:
            return model.fit(rows, self.target(rows), present=scored)
        return model.fit(rows, self.target(rows))


TASKS = {
    "churn": Task(
        "churn", ("label_churned",), ChurnModel, _churn_target, _churn_evaluate,
        _churn_metrics, "log_loss", fits_population=True,
    ),
    "stage": Task(
        "stage", ("label_next_stage",), StageModel, _stage_target, _stage_evaluate,
        _stage_metrics, "log_loss",
    ),
    "clv": Task(
        "clv", ("label_purchases", "label_spend"), ClvModel, _clv_target, _clv_evaluate,
        _clv_metrics, "relative_mae", fits_population=True,
    ),
}  # fmt: skip


def make_estimator(
    kind: str, label_horizon_days: int, horizon: int, settings: ClmSettings, params: dict
) -> Any:
    """A fresh estimator of ``kind``: the one construction for tuning, evaluation and refit."""
    options: dict[str, Any] = {
        "label_horizon_days": label_horizon_days,
        "horizon_days": horizon,
        "params": params,
    }
    if kind == "clv":
        options |= {
            "margin": settings.training.margin,
            "annual_discount_rate": settings.training.annual_discount_rate,
        }
    return TASKS[kind].make(**options)
