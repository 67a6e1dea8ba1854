"""``clm train``: backtest, evaluate, refit, log, register and gate the three models.

For each model: snapshots at time-ordered cutoffs (:mod:`training.splits`); a model fitted
on the training cutoffs (whose label windows end by the latest) is evaluated on the latest
next to its baselines; the model refitted on every cutoff is logged, registered as
``@challenger``, and promoted to ``@champion`` when it passes the gate
(:mod:`training.promotion`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from rich.console import Console

from clm.errors import DataError
from clm.settings import ClmSettings, LabelSettings
from features.snapshots import build_snapshot, build_snapshots
from features.sources import Dataset, load_with
from training.evaluate import beats
from training.models.base import held_out_customers
from training.models.tabular import xgb_params
from training.promotion import log_and_register, promote_passed
from training.registry import GATES, configure_tracking
from training.splits import (
    Folds,
    backtest_folds,
    longest_purged_horizon,
    purged_history_days,
    tuning_needs,
)
from training.tasks import TASKS, make_estimator
from training.tune import tune, tuning_steps

__all__ = ["KINDS", "TrainRequest", "TrainResult", "choose_clv_family", "train"]

KINDS = ("churn", "stage", "clv")
MIN_TRAINED_HORIZON_DAYS = 14


@dataclass(frozen=True)
class TrainRequest:
    data: Path
    as_of: date
    kinds: tuple[str, ...] = KINDS
    horizon_days: int | None = None
    clv_horizon_days: int | None = None
    tune: bool = False
    trials: int | None = None
    experiment: str | None = None


@dataclass
class TrainResult:
    run_id: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Steps:
    """Timed steps, shown on the console as they run (a spinner while each one works)."""

    def __init__(self, console: Console, timings: dict[str, float]) -> None:
        self.console, self.timings = console, timings

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        with self.console.status(f"{name} ..."):
            yield
        seconds = time.perf_counter() - started
        self.timings[name] = self.timings.get(name, 0.0) + seconds
        self.console.print(f"[green]done[/] {name} ({seconds:.1f} s)")


def _first_day(dataset: Dataset, as_of: date) -> date:
    first, last = dataset.date_range()
    if first is None or last is None:
        raise DataError("transactions and events are empty: nothing to train on")
    if as_of <= first.date():
        raise DataError(
            f"as_of {as_of:%Y-%m-%d} is not after the first record ({first:%Y-%m-%d}): "
            "there is no history to train on"
        )
    if as_of > last.date() + timedelta(days=1):
        raise DataError(
            f"as_of {as_of:%Y-%m-%d} is after the last record ({last:%Y-%m-%d}): label windows "
            f"would be empty, not observed; use at most {last.date() + timedelta(days=1)}"
        )
    return first.date()


def plan_folds(
    first_day: date, as_of: date, horizon: int, settings: ClmSettings, warnings: list[str]
) -> Folds:
    """Folds for ``horizon``, or for the longest horizon the history can label."""
    t = settings.training
    options = {"folds": t.folds, "step_days": t.fold_step_days}
    try:
        folds = backtest_folds(
            first_day=first_day, as_of=as_of, horizon_days=horizon,
            min_history_days=t.min_history_days, **options,
        )  # fmt: skip
        _warn_fewer_cutoffs(folds, first_day, settings, warnings)
        return folds
    except DataError as error:
        longest = longest_purged_horizon((as_of - first_day).days, t.min_history_days)
        if longest < MIN_TRAINED_HORIZON_DAYS:
            shortest = purged_history_days(MIN_TRAINED_HORIZON_DAYS, t.min_history_days)
            raise DataError(
                f"{error}; or at least {shortest} days to train on {MIN_TRAINED_HORIZON_DAYS}-day "
                f"labels and extrapolate to {horizon} days"
            ) from None
    warnings.append(
        f"the history ({(as_of - first_day).days} days) cannot label a {horizon}-day horizon "
        f"with {t.min_history_days} days of history and two cutoffs whose label windows do not "
        f"overlap; trained on {longest}-day "
        f"labels and extrapolated to {horizon} days (see each model's method)"
    )
    folds = backtest_folds(
        first_day=first_day, as_of=as_of, horizon_days=longest,
        min_history_days=t.min_history_days, **options,
    )  # fmt: skip
    _warn_fewer_cutoffs(folds, first_day, settings, warnings)
    return folds


def _warn_fewer_cutoffs(
    folds: Folds, first_day: date, settings: ClmSettings, warnings: list[str]
) -> None:
    """Say when half or more of the training cutoffs were left out for too little history
    (once per horizon): the fit then rests on few cutoffs (one left out of three, as a year's
    labels on three years of data leave, is the usual case and not worth a warning)."""
    t = settings.training
    kept, asked = len(folds.training), t.folds - 1
    if kept * 2 > asked:
        return
    earliest = first_day + timedelta(days=t.min_history_days)
    warning = (
        f"{folds.horizon_days}-day labels: {kept} of the {asked} training cutoffs "
        f"(training.folds {t.folds}, {t.fold_step_days} days apart) have the "
        f"{t.min_history_days} days of history (training.min_history_days) a cutoff needs; "
        f"the others, before {earliest:%Y-%m-%d}, are left out"
    )
    if warning not in warnings:
        warnings.append(warning)


def _snapshots(dataset: Dataset, folds: Folds, settings: ClmSettings) -> pd.DataFrame:
    h = folds.horizon_days
    labels = LabelSettings(churn_horizon_days=h, stage_horizon_days=h, clv_horizon_days=h)
    return build_snapshots(
        dataset, cutoffs=folds.cutoffs, settings=settings.model_copy(update={"labels": labels})
    )


def _data_warnings(frame: pd.DataFrame) -> list[str]:
    latest = frame[frame["as_of"] == frame["as_of"].max()]
    refunds_only = int(((latest["purchase_days"] == 0) & (latest["refund_count"] > 0)).sum())
    if refunds_only:
        return [
            f"{refunds_only} customers have refunds but no purchase before "
            f"{latest['as_of'].max()}; they are scored as prospects (no purchase history)"
        ]
    return []


def train(
    request: TrainRequest, settings: ClmSettings, console: Console | None = None
) -> TrainResult:
    """Train, evaluate, log, register and gate the requested models; see the module doc."""
    console = console or Console(stderr=True)
    configure_tracking(settings.training, request.experiment)
    timings: dict[str, float] = {}
    steps = Steps(console, timings)
    with steps.step("load data"):
        dataset = load_with(request.data, settings.data)
    first_day = _first_day(dataset, request.as_of)
    # Each model's run is tagged with its own warnings and the data's, not the others'.
    planned: dict[str, list[str]] = {kind: [] for kind in request.kinds}
    plans = {
        kind: plan_folds(
            first_day, request.as_of, _horizon(kind, request, settings), settings, planned[kind]
        )
        for kind in request.kinds
    }
    tuned = _tunable(plans, request, settings, planned, first_day) if request.tune else set()
    with mlflow.start_run(run_name=f"train {request.as_of:%Y-%m-%d}") as run:
        result = TrainResult(run.info.run_id, timings=timings)
        for kind in request.kinds:  # churn and stage on one horizon: said once
            result.warnings += [w for w in planned[kind] if w not in result.warnings]
        about_data: dict[int, list[str]] = {}  # by label horizon (its snapshots')
        mlflow.log_params({"as_of": str(request.as_of), "data": str(request.data)})
        cache: dict[int, pd.DataFrame] = {}
        present: pd.DataFrame | None = None
        failed = True
        try:
            for kind in request.kinds:
                horizon, folds = _horizon(kind, request, settings), plans[kind]
                if folds.horizon_days not in cache:
                    with steps.step(f"snapshots for {folds.horizon_days}-day labels"):
                        cache[folds.horizon_days] = _snapshots(dataset, folds, settings)
                    about_data[folds.horizon_days] = _data_warnings(cache[folds.horizon_days])
                frame = cache[folds.horizon_days]
                if TASKS[kind].fits_population and present is None:  # today's customers
                    with steps.step("snapshot at --as-of, features only"):
                        present = build_snapshot(dataset, as_of=request.as_of, settings=settings)
                own = [*planned[kind], *about_data[folds.horizon_days]]
                result.models[kind] = _train_one(
                    kind, frame, folds, horizon, request, settings, steps, own, present,
                    kind in tuned,
                )  # fmt: skip
                # What the model added (losing to a baseline), and data warnings not said yet.
                result.warnings += [w for w in own if w not in result.warnings]
            failed = False
        finally:
            promote_passed(list(result.models.values()), failed=failed)
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)  # one line
        mlflow.log_text("\n".join(result.warnings) or "none", "warnings.txt")
        mlflow.log_metrics({f"time_{_slug(k)}_s": v for k, v in timings.items()})
    return result


def _losing_to_baselines(
    kind: str, metrics: dict[str, float], baselines: dict[str, dict[str, float]]
) -> list[str]:
    """A model no better than a baseline on its gate metric is still registered (and, as a
    first version, promoted): said, so that nobody serves it unawares."""
    gate = GATES[kind]
    said = []
    for name, figures in baselines.items():
        metric = gate.metric if gate.metric in metrics and gate.metric in figures else gate.fallback
        if metric is None or metric not in metrics or metric not in figures:
            continue
        if not beats(metrics, figures, metric, greater_is_better=gate.greater_is_better,
                     min_improvement=0.0):  # fmt: skip
            said.append(
                f"{kind}: the model does not beat the {name} baseline on {metric} "
                f"({metrics[metric]:.4f} against {figures[metric]:.4f} on the evaluation fold)"
            )
    return said


def _tunable(
    plans: dict[str, Folds],
    request: TrainRequest,
    settings: ClmSettings,
    warnings: dict[str, list[str]],
    first_day: date,
) -> set[str]:
    """The kinds ``--tune`` can tune, known before any work. Tuning walks forward over the
    training cutoffs, each scored by a model fitted on the ones whose labels end by it; a kind
    without such a pair is trained with the configured parameters and a warning says what it
    needs. When no kind can be tuned, ``--tune`` is refused."""
    t = settings.training
    refused = {}
    for kind, folds in plans.items():
        if not tuning_steps(folds):
            h = _horizon(kind, request, settings)
            needed_folds, needed_days = tuning_needs(h, t.fold_step_days, t.min_history_days)
            history = (request.as_of - first_day).days
            needs = []  # only what is not met yet
            if t.folds < needed_folds:
                needs.append(f"training.folds >= {needed_folds} (now {t.folds})")
            if history < needed_days or not needs:
                needs.append(f"{needed_days} days of history before --as-of (it has {history})")
            refused[kind] = (
                f"the {kind} model has no two training cutoffs at least {h} days apart (its "
                f"label horizon) before its evaluation fold (it has "
                f"{', '.join(str(c) for c in folds.training)}): tuning scores a cutoff with a "
                f"model fitted on cutoffs whose labels end by it. With training.fold_step_days "
                f"{t.fold_step_days} and training.min_history_days {t.min_history_days} that "
                f"takes {' and '.join(needs)}"
            )
    if len(refused) == len(plans):
        raise DataError(f"--tune: {'; '.join(refused.values())}")
    for kind, why in refused.items():
        warnings[kind].append(f"--tune: {why}; it is trained untuned")
    return set(plans) - set(refused)


def _horizon(kind: str, request: TrainRequest, settings: ClmSettings) -> int:
    if kind == "clv":
        return request.clv_horizon_days or settings.labels.clv_horizon_days
    if kind == "stage":
        return request.horizon_days or settings.labels.stage_horizon_days
    return request.horizon_days or settings.labels.churn_horizon_days


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _train_one(
    kind: str,
    frame: pd.DataFrame,
    folds: Folds,
    horizon: int,
    request: TrainRequest,
    settings: ClmSettings,
    steps: Steps,
    warnings: list[str],
    present: pd.DataFrame | None = None,
    tuned: bool = False,
) -> dict[str, Any]:
    """Fit, evaluate, refit and register one model; ``present`` is the snapshot at --as-of
    that the refitted model's BG/NBD part is fitted on (churn, CLV)."""
    task = TASKS[kind]
    training = frame[frame["as_of"].isin(folds.training)]
    evaluation = frame[frame["as_of"] == folds.evaluation]
    with mlflow.start_run(run_name=kind, nested=True):
        mlflow.log_param("tuned", tuned)
        params = xgb_params(settings.training)
        if tuned:
            with steps.step(f"{kind}: tune"):
                params = tune(kind, training, folds, horizon, settings, request.trials, params)
        with steps.step(f"{kind}: fit and evaluate"):
            model = task.fit(
                make_estimator(kind, folds.horizon_days, horizon, settings, params),
                training,
                evaluation,
            )
            if kind == "clv":
                model, compared = choose_clv_family(model, training, folds, settings, params)
            result = task.evaluate(model, training, evaluation)
            # The CLV family "btyd" is its baseline: a tie with it says nothing.
            same = {"bgnbd_gamma_gamma"} if getattr(model, "family", None) == "btyd" else set()
            baselines = {k: v for k, v in result.baselines.items() if k not in same}
            warnings += _losing_to_baselines(kind, result.metrics, baselines)
        with steps.step(f"{kind}: refit on all folds"):
            final = make_estimator(kind, folds.horizon_days, horizon, settings, params)
            final.set_params(**({"family": model.family} if kind == "clv" else {}))
            task.fit(final, frame, present)
        with steps.step(f"{kind}: log and register"):
            decision = log_and_register(
                kind=kind, model=final, evaluated=model, evaluation=result,
                training=training, fold=evaluation, folds=folds, horizon=horizon,
                as_of=request.as_of, settings=settings, data=request.data, warnings=warnings,
            )  # fmt: skip
            if kind == "clv":
                mlflow.log_dict(compared, "clv_family_comparison.json")
        return {"metrics": result.metrics, "baselines": result.baselines, **decision}


def choose_clv_family(
    model: Any,
    training: pd.DataFrame,
    folds: Folds,
    settings: ClmSettings,
    params: dict[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """XGBoost (``model``, fitted on ``training``) or BG/NBD x Gamma-Gamma, whichever has the
    lower MAE on the latest training cutoff, the evaluation fold playing no part (its metrics
    are then those of a model chosen without it, as with tuning).

    Both are fitted on the training cutoffs whose labels end by the latest one. When there is
    none (a long horizon on a short history), they are fitted on the rows of four customers in
    five, at every training cutoff, and scored on the fifth left out (by id): never on a
    customer they were fitted on, though on a period their labels overlap.
    """
    task = TASKS["clv"]
    h = folds.horizon_days
    cutoff = folds.training[-1]
    population = training[training["as_of"] == cutoff]  # BG/NBD's customers: features only
    if fitted := folds.fitted_before(cutoff):
        earlier, validation = training[training["as_of"].isin(fitted)], population
        basis = (
            f"the training cutoff {cutoff} (fitted on {', '.join(map(str, fitted))}, whose "
            f"labels end by it)"
        )
    else:
        held = held_out_customers(training["customer_id"])
        earlier, validation = training[~held], population[held[training["as_of"] == cutoff]]
        basis = (
            f"a fifth of the customers at the training cutoff {cutoff}, by id (fitted on the "
            f"other customers' rows: no training cutoff lies {h} days before it)"
        )
    # The BTYD candidate is the XGBoost one's own BG/NBD x Gamma-Gamma part (fitted once).
    # BTYD columns fitted on every customer at each cutoff (features only), as for ``model``.
    xgboost = make_estimator("clv", h, model.horizon_days, settings, params).fit(
        earlier, task.target(earlier), present=population, populations=training
    )
    candidates = {"xgboost": xgboost, "btyd": xgboost.as_btyd()}
    scores = {
        name: task.metrics(candidate.predict_frame(validation, h), validation)
        for name, candidate in candidates.items()
    }
    winner = min(scores, key=lambda name: scores[name]["mae"])
    chosen = model if winner == "xgboost" else model.as_btyd()
    return chosen, {"chosen": winner, "chosen_on": basis, "metrics": scores}
