"""Log a trained model's run, register it as ``@challenger`` and decide on ``@champion``.

The gate compares the challenger (the model fitted without the evaluation fold) with the
current champion on the same evaluation fold, by the gate metric of the kind
(:data:`training.registry.GATES`) and the margin ``training.promotion_min_improvement``:

* a champion for another horizon is another prediction: the two are not compared and the
  challenger is not promoted (``clm models promote`` moves the horizon by hand);
* a champion fitted only on cutoffs before the fold's is scored on it. When its training
  labels ran past the fold's cutoff (a retrain less than a horizon later, as on a monthly
  cycle), the model its own run evaluated, fitted without those labels, is scored instead,
  so that neither side has seen the fold's outcomes; a version logged before that model was
  kept is scored as served, and the reason gives the days of overlap, which can only favour
  it;
* a champion evaluated on this very fold (same cutoff and label horizon: a retrain on the
  same --as-of) is compared by the out-of-sample metrics its own run logged there;
* a champion fitted on the fold's cutoff or later (a backfill, a longer horizon) has seen
  the fold: the two are not compared and the challenger is not promoted.

When either side lacks the gate metric (a fold whose buyers are one class, a version logged
before the metric), the two are compared on the gate's fallback (churn: every customer's
AUC), and the reason says why. The reason gives both figures and the fold.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas

from clm.settings import AS_OF_KEY, MEANING_KEY, ClmSettings, feature_meaning, meaning_changes
from clm.tracking import logged_metadata
from training.evaluate import beats
from training.models.pyfunc import (
    EstimatorPyfunc,
    input_example,
    model_signature,
    pip_requirements,
)
from training.models.tabular import feature_frame
from training.registry import CHAMPION_TAG, GATES, MODEL_NAMES, champion_version, promote
from training.splits import Folds
from training.tasks import TASKS, Evaluation

__all__ = ["log_and_register", "promote_passed"]


def _finite(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def _log_run(kind: str, model: Any, evaluated: Any, evaluation: Evaluation, **context: Any) -> None:
    folds: Folds = context["folds"]
    horizon = context["horizon"]
    params = {
        "kind": kind,
        "as_of": str(context["as_of"]),
        "cutoffs": ",".join(str(c) for c in folds.cutoffs),
        "evaluation_cutoff": str(folds.evaluation),
        "training_cutoffs": ",".join(str(c) for c in folds.training),
        "label_horizon_days": folds.horizon_days,
        "horizon_days": horizon,
        "method": model.method(horizon),
        **{f"xgb_{k}": v for k, v in (model.params or {}).items()},
    }
    if kind == "clv":
        params |= {"family": model.family, "margin": model.margin}
        params["annual_discount_rate"] = model.annual_discount_rate
    mlflow.log_params(params)
    mlflow.set_tag("clm.method", model.method(horizon))
    mlflow.log_metrics(_finite(evaluation.metrics))
    for name, metrics in evaluation.baselines.items():
        mlflow.log_metrics(_finite(metrics, f"baseline_{name}_"))
    for name, figure in evaluation.figures.items():
        mlflow.log_figure(figure, f"plots/{name}.png")
    if evaluation.notes:
        mlflow.log_dict(evaluation.notes, "evaluation_notes.json")


# MLflow warnings that hold nothing for a clm user and would print on every train: a local
# path matches two identical dataset-source classes MLflow registers; integer columns in a
# signature (clm's counts are zero-filled, never missing, and scoring sends them as given).
QUIET = (
    "The specified dataset source can be interpreted in multiple ways",
    "Hint: Inferred schema contains integer column",
)


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def snapshot_digest(frame: pd.DataFrame) -> str:
    """A digest of every row of a snapshot (its logged Dataset's digest)."""
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:16]


def fold_key(kind: str, fold: pd.DataFrame) -> str:
    """What an evaluation fold is, as exactly as it can be told apart: its customers and their
    whole-valued labels, in id order (feature sums may differ in the last bits from run to
    run, as rows are summed in another order)."""
    labels = [
        c
        for c in TASKS[kind].label_columns
        if c in fold and not pd.api.types.is_float_dtype(fold[c])
    ]
    rows = fold[["customer_id", *labels]].sort_values("customer_id", kind="stable")
    hashes = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:16]


def _logged_source(run: Any, context: str) -> str:
    """The data source of the snapshot a run logged for ``context`` (training / evaluation)."""
    for item in run.inputs.dataset_inputs if run and run.inputs else []:
        if any(t.key == "mlflow.data.context" and t.value == context for t in item.tags):
            source = str(item.dataset.source)
            with contextlib.suppress(ValueError, AttributeError):
                source = str(json.loads(source).get("uri", source))
            return source
    return "its data"


def _log_inputs(kind: str, training: pd.DataFrame, fold: pd.DataFrame, data: Path) -> None:
    """Digests of the training and evaluation snapshots (all rows; schema from a sample), and
    the evaluation fold's key (:func:`fold_key`)."""
    mlflow.log_param("evaluation_fold_key", fold_key(kind, fold))
    targets = TASKS[kind].label_columns[-1]
    for context, frame in (("training", training), ("evaluation", fold)):
        sample = frame.head(1000).assign(as_of=lambda f: f["as_of"].astype(str))
        with _quiet():  # the schema is inferred when the input is logged
            dataset = from_pandas(
                sample,
                source=str(data.resolve()),
                name=f"{kind}-{context} ({len(frame)} rows)",
                targets=targets,
                digest=snapshot_digest(frame),
            )
            mlflow.log_input(dataset, context=context)


# The run's tag that names its evaluated model (fitted without the evaluation fold): what a
# later retrain's gate scores when the served model's labels overlap its fold.
EVALUATED_TAG = "clm.evaluated_model"


def _log_model(
    kind: str, model: Any, fold: pd.DataFrame, horizon: int, name: str, settings: ClmSettings,
    as_of: date,
) -> str:  # fmt: skip
    example = input_example(feature_frame(fold))
    output = model.predict_frame(example, horizon)
    with _quiet():
        info = mlflow.pyfunc.log_model(
            name=name,
            # What its features mean (scoring checks that its settings give the same) and the
            # cutoff its labels reach (scores at an earlier one are in-sample).
            metadata={MEANING_KEY: feature_meaning(settings), AS_OF_KEY: as_of.isoformat()},
            python_model=EstimatorPyfunc(model),
            signature=model_signature(example, output, horizon),
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    return str(info.model_uri)


def _dates(text: str) -> list[date]:
    return [date.fromisoformat(c) for c in text.split(",") if c]


def _scored(
    kind: str, uri: str, version: str, fold: pd.DataFrame, folds: Folds, settings: ClmSettings
) -> dict[str, float]:
    """The metrics of the model at ``uri`` on the fold; NotComparable, naming them, when it
    needs features the fold lacks (the feature settings changed since it was trained)."""
    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    features = feature_frame(fold)
    missing = [n for n in (schema.input_names() if schema else []) if n not in features]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise NotComparable(
            f"champion v{version} needs features {shown} that this run's snapshot lacks (were "
            "the feature settings changed since it was trained?)"
        )
    output = model.predict(features, params={"horizon_days": folds.horizon_days})
    return TASKS[kind].metrics(output, fold)


def _champion_metrics(
    kind: str, version: str, fold: pd.DataFrame, folds: Folds, horizon: int,
    settings: ClmSettings,
) -> tuple[dict[str, float], str]:  # fmt: skip
    """The champion's metrics on this fold and how they were measured; NotComparable when
    it predicts another horizon or was fitted on the fold's cutoff or later (see the module
    doc)."""
    client = MlflowClient()
    name = MODEL_NAMES[kind]
    run_id = client.get_model_version(name, version).run_id
    run = client.get_run(run_id) if run_id else None
    params = run.data.params if run else {}
    here = f"the evaluation fold at {folds.evaluation}"

    def day(key: str) -> date | None:
        value = params.get(key)
        return date.fromisoformat(value) if value else None

    served = params.get("horizon_days")
    if served is not None and served != str(horizon):
        raise NotComparable(
            f"champion v{version} predicts a {served}-day horizon, the challenger {horizon} "
            "days: another prediction (promoting it moves what the scores answer for)"
        )
    # Before any comparison, the same fold's logged metrics included: champions of other
    # settings could not be scored together, under any settings.
    kept = logged_metadata(name, version).get(MEANING_KEY) or {}
    if changes := meaning_changes(kept, feature_meaning(settings)):
        raise NotComparable(
            f"champion v{version} was trained with {'; '.join(changes[:5])}: its features "
            "meant something else"
        )
    cutoffs = _dates(params.get("cutoffs", ""))
    if day("evaluation_cutoff") == folds.evaluation and params.get("label_horizon_days") == str(
        folds.horizon_days
    ):
        logged = dict(run.data.metrics) if run else {}
        logged_key = params.get("evaluation_fold_key")  # runs before it: not checked
        if logged_key is not None and logged_key != fold_key(kind, fold):
            # Same dates, other customers or outcomes: another export or another business.
            # The champion was refitted on this cutoff, so it cannot be scored on it either.
            raise NotComparable(
                f"champion v{version} was evaluated on the same fold dates ({folds.evaluation}) "
                f"in other data (from {_logged_source(run, 'evaluation')}; fold key "
                f"{logged_key}, here {fold_key(kind, fold)}) and was fitted on that cutoff"
            )
        return logged, f"both on {here}; the champion's from its own run"
    if cutoffs and max(cutoffs) >= folds.evaluation:
        raise NotComparable(
            f"champion v{version} was fitted on cutoffs up to {max(cutoffs)}, not before "
            f"{here}: it has seen the fold"
        )
    basis = f"both on {here}"
    trained_to = day("as_of")
    if trained_to and trained_to > folds.evaluation:
        overlap = (trained_to - folds.evaluation).days
        days = f"{overlap} day{'s' * (overlap != 1)} into"
        reach = f"training labels reach {days if overlap < folds.horizon_days else 'over all of'}"
        # The model its run evaluated was fitted on labels that end by its evaluation cutoff.
        evaluated = run.data.tags.get(EVALUATED_TAG) if run else None
        fitted = _dates(params.get("training_cutoffs", ""))
        own = params.get("label_horizon_days", "")
        blind = fitted and own.isdigit() and max(fitted) + timedelta(int(own)) <= folds.evaluation
        if evaluated and blind:
            try:
                metrics = _scored(kind, evaluated, version, fold, folds, settings)
            except NotComparable:
                raise
            except Exception as error:  # its artifacts gone: the served one is scored
                warnings.warn(
                    f"champion v{version}'s evaluated model ({evaluated}) cannot be loaded "
                    f"({type(error).__name__}); the served one is scored",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                basis += (
                    f", neither fitted on its outcomes: the champion as its own run evaluated "
                    f"it (fitted on cutoffs up to {max(fitted)}), as the served one's {reach} "
                    "the fold's label window"
                )
                return metrics, basis
        basis += f"; the champion's {reach} the fold's label window, which can only favour it"
    return _scored(kind, f"models:/{name}/{version}", version, fold, folds, settings), basis


NEVER_SERVED = "no (never served)"  # the clm.champion tag of a version not promoted


class NotComparable(Exception):
    """The champion cannot be measured on the challenger's evaluation fold."""


def _decide(
    kind: str, version: str, evaluation: Evaluation, fold: pd.DataFrame, folds: Folds,
    horizon: int, settings: ClmSettings,
) -> dict[str, Any]:  # fmt: skip
    gate = GATES[kind]
    min_improvement = settings.training.promotion_min_improvement
    champion = champion_version(MODEL_NAMES[kind])
    decision: dict[str, Any] = {
        "challenger_version": version,
        "champion_version": champion,
        "gate_metric": gate.metric,
        "greater_is_better": gate.greater_is_better,
        "min_improvement": min_improvement,
        "challenger_metrics": _finite(evaluation.metrics),
    }
    if champion is None:
        return decision | {"promoted": True, "reason": "first version"}
    try:
        metrics, basis = _champion_metrics(kind, champion, fold, folds, horizon, settings)
    except NotComparable as error:
        reason = (
            f"{error}; not compared, so not promoted: promote v{version} with clm models "
            "promote if it should serve"
        )
        return decision | {"promoted": False, "champion_measured_on": None, "reason": reason}
    except Exception as error:  # e.g. features added or renamed since it was trained
        first = " ".join(str(error).split())[:300]
        reason = (
            f"champion v{champion} cannot score this evaluation fold ({type(error).__name__}: "
            f"{first}); not compared, so not promoted: promote v{version} with clm models "
            "promote if it should serve"
        )
        return decision | {"promoted": False, "champion_measured_on": None, "reason": reason}
    decision |= {"champion_metrics": _finite(metrics), "champion_measured_on": basis}
    metric, why = gate.metric, ""
    lacking = [
        side
        for side, figures in (
            ("challenger", evaluation.metrics),
            (f"champion v{champion}", metrics),
        )
        if metric not in figures
    ]
    if lacking:
        fallback = gate.fallback
        who = f"{' and '.join(lacking)} {'have' if len(lacking) > 1 else 'has'} no {metric}"
        if fallback is None or any(fallback not in f for f in (evaluation.metrics, metrics)):
            reason = (
                f"{who} ({basis}); not compared, so not promoted: promote v{version} with "
                "clm models promote if it should serve"
            )
            return decision | {"promoted": False, "reason": reason}
        metric, why = fallback, f"; {who}"
        decision["gate_metric"] = metric
    won = beats(
        evaluation.metrics, metrics, metric,
        greater_is_better=gate.greater_is_better, min_improvement=min_improvement,
    )  # fmt: skip
    verdict = "beats" if won else "does not beat"
    figures = f"{evaluation.metrics[metric]:.4f} against {metrics[metric]:.4f}"
    reason = f"challenger {verdict} champion v{champion} on {metric}: {figures} ({basis}{why})"
    return decision | {"promoted": won, "reason": reason}


def log_and_register(
    *,
    kind: str,
    model: Any,
    evaluated: Any,
    evaluation: Evaluation,
    training: pd.DataFrame,
    fold: pd.DataFrame,
    folds: Folds,
    horizon: int,
    as_of: date,
    settings: ClmSettings,
    data: Path,
    warnings: list[str],
) -> dict[str, Any]:
    """Log the run, register the refitted model and move the aliases; returns the decision."""
    _log_run(kind, model, evaluated, evaluation, folds=folds, horizon=horizon, as_of=as_of)
    _log_inputs(kind, training, fold, data)
    if warnings:
        mlflow.set_tag("clm.warnings", " | ".join(warnings)[:5000])
    uri = _log_model(kind, model, fold, horizon, kind, settings, as_of)
    evaluated_uri = _log_model(
        kind, evaluated, fold, horizon, f"{kind}_evaluated", settings, folds.evaluation
    )
    mlflow.set_tag(EVALUATED_TAG, evaluated_uri)
    name = MODEL_NAMES[kind]
    # MLflow prints "Successfully registered model" to stderr (kept with --debug).
    quiet = os.environ.get("MLFLOW_LOGGING_LEVEL", "").upper() == "ERROR"
    with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
        version = str(mlflow.register_model(uri, name).version)
    client = MlflowClient()
    client.set_registered_model_alias(name, "challenger", version)
    decision = _decide(kind, version, evaluation, fold, folds, horizon, settings)
    mlflow.log_dict(decision, "promotion.json")
    # Promoted by the job once every model it trains has passed (training.jobs.train).
    pending = "pending" if decision["promoted"] else "False"
    mlflow.set_tags({"clm.promoted": pending, "clm.decision": decision["reason"]})
    if not decision["promoted"]:  # the MLflow UI shows for every run whether it serves
        mlflow.set_tag(CHAMPION_TAG, NEVER_SERVED)
    return {
        "name": name,
        "version": version,
        "promoted": decision["promoted"],
        "reason": decision["reason"],
        "run_id": mlflow.active_run().info.run_id,  # type: ignore[union-attr]
    }


def promote_passed(outcomes: list[dict[str, Any]], *, failed: bool) -> None:
    """Move ``@champion`` to every version that passed its gate, unless a model of the same
    job failed: then none moves (a job's champions change together or not at all)."""
    client = MlflowClient()
    for outcome in outcomes:
        if not outcome["promoted"]:
            continue
        if failed:
            client.set_tag(outcome["run_id"], "clm.promoted", "False (another model failed)")
            client.set_tag(outcome["run_id"], CHAMPION_TAG, NEVER_SERVED)
            outcome["promoted"] = False
            continue
        promote(outcome["name"], outcome["version"])
        client.set_tag(outcome["run_id"], "clm.promoted", "True")
