"""Optuna tuning over the time-ordered training folds; the evaluation fold is never seen.

The caller passes only the training folds. Each trial walks them forward: fit on the
cutoffs whose label windows end by cutoff ``j``, score on cutoff ``j``, for every ``j`` that
has such cutoffs (:func:`tuning_steps`; no fit has seen an outcome after what it scores); the
running mean is reported (and logged, a step each) after each step but the last, so the
median pruner can stop a poor trial before the rest of its fits. Each trial is one nested
MLflow run; a pruned one ends ``KILLED`` (stopped on purpose, not failed). The winner is
rebuilt from its full parameter set (base parameters updated with the trial's), not from a
partial dict.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import optuna
import pandas as pd

from clm.settings import ClmSettings
from training.splits import Folds
from training.tasks import TASKS, make_estimator

__all__ = ["search_space", "tune", "tuning_steps"]


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """The XGBoost parameters a trial varies."""
    return {
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def tuning_steps(folds: Folds) -> list[tuple[Any, tuple[Any, ...]]]:
    """Each training cutoff that can be scored, with the cutoffs its model is fitted on."""
    steps = [(cutoff, folds.fitted_before(cutoff)) for cutoff in folds.training]
    return [(cutoff, fitted) for cutoff, fitted in steps if fitted]


def _walk_forward(
    kind: str,
    training: pd.DataFrame,
    steps: list[tuple[Any, tuple[Any, ...]]],
    make: Any,
    trial: optuna.Trial,
) -> float:
    task = TASKS[kind]
    scores: list[float] = []
    for step, (cutoff, fitted) in enumerate(steps, start=1):
        fit_rows = training[training["as_of"].isin(fitted)]
        score_rows = training[training["as_of"] == cutoff]
        model = task.fit(make(), fit_rows, score_rows)
        output = model.predict_frame(score_rows, model.label_horizon_days)
        scores.append(task.metrics(output, score_rows)[task.tune_metric])
        mean = sum(scores) / len(scores)
        if math.isfinite(mean):
            mlflow.log_metric(task.tune_metric, mean, step=step)
        # After the last fit there is nothing left to save: the trial ends with its value.
        if step < len(steps):
            trial.report(mean, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return sum(scores) / len(scores)


def tune(
    kind: str,
    training: pd.DataFrame,
    folds: Folds,
    horizon: int,
    settings: ClmSettings,
    trials: int | None,
    base: dict[str, Any],
) -> dict[str, Any]:
    """The best XGBoost parameters for ``kind`` (lower ``tune_metric`` is better)."""
    steps = tuning_steps(folds)
    if not steps:
        raise ValueError(
            f"tuning needs two training cutoffs {folds.horizon_days} days apart, got "
            f"{', '.join(map(str, folds.training))}; raise training.folds"
        )
    seed = settings.training.seed
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # before "A new study created"
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        study_name=f"{kind}-tuning",
    )

    def objective(trial: optuna.Trial) -> float:
        params = base | search_space(trial)

        def make() -> Any:
            return make_estimator(kind, folds.horizon_days, horizon, settings, params)

        with mlflow.start_run(run_name=f"{kind} trial {trial.number}", nested=True):
            mlflow.log_params(params)
            mlflow.log_param("scored_cutoffs", ",".join(str(c) for c, _ in steps))
            mlflow.log_param(
                "walk_forward",
                "; ".join(f"{c} fitted on {','.join(map(str, fitted))}" for c, fitted in steps),
            )
            try:
                value = _walk_forward(kind, training, steps, make, trial)
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "pruned")
                mlflow.end_run("KILLED")  # stopped on purpose: not shown as a failed run
                raise
            return value if math.isfinite(value) else math.inf

    count = trials or settings.training.trials
    study.optimize(objective, n_trials=count)
    best = base | study.best_trial.params
    mlflow.log_params({f"tuned_{k}": v for k, v in study.best_trial.params.items()})
    # What the study was: the gate judges on its own metric (churn: AUC on buyers).
    mlflow.log_params({"tuning_trials": count, "tuning_metric": TASKS[kind].tune_metric})
    mlflow.log_metric(f"tuning_best_{TASKS[kind].tune_metric}", study.best_value)
    return best
