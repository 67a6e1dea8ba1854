"""The MLflow side: where runs go, logging the models, registering, moving aliases.

Registered models are ``clm-churn``, ``clm-stage`` and ``clm-clv``. A new version gets the
alias ``@challenger``; ``@champion`` moves only when the challenger beats the champion on the
same evaluation fold by the gate in settings (the first version is promoted). Aliases are
set as the very last step of a run, so a failed or interrupted run never touches the
champion; each alias change is one write, so a service reading the registry meanwhile sees
either the old or the new champion. The registered model's tag ``clm.champion_history``
lists the champions in order, for ``rollback``; each version's run carries the tag
``clm.champion`` (``yes`` since when, ``no`` since when and for which version, or ``no
(never served)``), so that
the MLflow UI shows which run serves however the alias moved (the gate, or by hand).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from clm.errors import ClmError
from clm.settings import TrainingSettings
from clm.tracking import MODEL_NAMES, check_sqlite_store, sqlite_path, tracking_uri

__all__ = [
    "CHAMPION_TAG",
    "GATES",
    "MODEL_NAMES",
    "Gate",
    "champion_version",
    "configure_tracking",
    "list_versions",
    "promote",
    "rollback",
    "version_details",
    "version_horizons",
]

HISTORY_TAG = "clm.champion_history"
CHAMPION_TAG = "clm.champion"


@dataclass(frozen=True)
class Gate:
    """The metric a challenger must improve on to become champion."""

    metric: str
    greater_is_better: bool
    # Compared on instead when a side lacks ``metric`` (a fold whose buyers are all one
    # class, a version logged before the metric existed).
    fallback: str | None = None


GATES = {
    "churn": Gate("auc_buyers", True, fallback="auc"),
    "stage": Gate("log_loss", False),
    "clv": Gate("relative_mae", False),
}


def configure_tracking(
    settings: TrainingSettings, experiment: str | None = None, *, create: bool = True
) -> str:
    """Point MLflow at the store from settings, ``MLFLOW_TRACKING_URI`` or ``mlflow/``.

    Returns the tracking URI. The local default is a SQLite database with an artifact folder
    beside it, so no server is needed. ``create=False`` (the registry commands): a SQLite
    store must exist already, and no experiment is set up in it.
    """
    uri, artifacts = tracking_uri(settings)
    database = sqlite_path(uri)
    if database is not None:
        check_sqlite_store(database, create=create)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not create:  # the registry only: nothing is written to the store
        if database is None:  # a server that is down says so here, not as "no models"
            MlflowClient().search_registered_models(max_results=1)
        return uri
    name = experiment or settings.experiment
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifacts)
    mlflow.set_experiment(name)
    return uri


def _client() -> MlflowClient:
    return MlflowClient()


def champion_version(name: str) -> str | None:
    """The version holding ``@champion``, or None."""
    try:
        return str(_client().get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        return None


def _history(client: MlflowClient, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    text = tags.get(HISTORY_TAG, "")
    return [v for v in text.split(",") if v]


def _check_version(client: MlflowClient, name: str, version: str) -> None:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise ClmError(f"model {name} has no version {version}") from None


def _mark_runs(client: MlflowClient, name: str, old: str | None, new: str, how: str) -> None:
    """The ``clm.champion`` tags of the runs of the champion replaced and the new one."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    marks = {new: f"yes (since {now}, {how})"}
    if old is not None and old != new:
        marks[old] = f"no (v{new} since {now})"
    for version, text in marks.items():
        run_id = client.get_model_version(name, version).run_id
        # Best effort, after the alias moved: a deleted run keeps no tags, and that is no
        # reason to fail a promotion that happened (or a job's other promotions).
        with contextlib.suppress(MlflowException):
            if run_id:
                client.set_tag(run_id, CHAMPION_TAG, text)


def promote(name: str, version: str, how: str = "by the gate") -> str | None:
    """Give ``version`` the ``@champion`` alias and record it in the champion history;
    returns the version it replaced (None if none; ``version`` itself if it held it)."""
    client = _client()
    _check_registered(client, name)
    _check_version(client, name, version)
    current = champion_version(name)
    if current == str(version):
        return current
    history = [*_history(client, name), str(version)]
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    client.set_registered_model_alias(name, "champion", str(version))
    _mark_runs(client, name, current, str(version), how)
    return current


def rollback(name: str) -> str:
    """Give ``@champion`` back to the previous champion; returns its version."""
    client = _client()
    _check_registered(client, name)
    history = _history(client, name)
    current = champion_version(name)
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise ClmError(f"model {name} has no previous champion to roll back to")
    previous = history[-1]
    client.set_registered_model_alias(name, "champion", previous)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    _mark_runs(client, name, current, previous, "by a rollback")
    return previous


def _check_registered(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none"
        raise ClmError(f"no registered model {name} (registered: {known})") from None


def version_horizons(name: str, versions: list[str]) -> dict[str, str]:
    """The horizon (days, as logged) each of these versions predicts."""
    client = _client()
    found = {}
    for version in versions:
        run_id = client.get_model_version(name, version).run_id
        horizon = client.get_run(run_id).data.params.get("horizon_days") if run_id else None
        if horizon is not None:
            found[version] = horizon
    return found


def list_versions() -> list[dict[str, Any]]:
    """Every version of the clm models: name, version, aliases, gate metric, what it was
    trained for (as_of, the evaluation cutoff its metric is from, the horizon), creation time."""
    client = _client()
    rows = []
    for kind, name in MODEL_NAMES.items():
        try:
            model = client.get_registered_model(name)
        except MlflowException:
            continue
        aliases: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for version in client.search_model_versions(f"name = '{name}'"):
            run = client.get_run(version.run_id) if version.run_id else None
            metrics = run.data.metrics if run else {}
            params = run.data.params if run else {}
            created = datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC)
            rows.append(
                {
                    "name": name,
                    "version": str(version.version),
                    "aliases": sorted(aliases.get(str(version.version), [])),
                    "gate": GATES[kind].metric,
                    "metric": metrics.get(GATES[kind].metric),
                    "as_of": params.get("as_of", "-"),
                    "evaluated_on": params.get("evaluation_cutoff", "-"),
                    "horizon": params.get("horizon_days", "-"),
                    "created": created.strftime("%Y-%m-%d %H:%M"),
                }
            )
    return sorted(rows, key=lambda r: (r["name"], int(r["version"])))


def version_details(name: str, version: str | None = None) -> dict[str, Any]:
    """What ``clm models show`` prints of one version (the champion when ``version`` is
    None): its aliases, what it was trained for, its metrics beside the baselines' on the
    same evaluation fold, the gate's decision, the warnings of its run and its feature
    settings (the model's metadata)."""
    client = _client()
    _check_registered(client, name)
    if version is None:
        version = champion_version(name)
        if version is None:
            raise ClmError(f"model {name} has no @champion: name a version (clm models list)")
    _check_version(client, name, version)
    model = client.get_registered_model(name)
    found = client.get_model_version(name, version)
    run = client.get_run(found.run_id) if found.run_id else None
    metrics = dict(run.data.metrics) if run else {}
    params = dict(run.data.params) if run else {}
    tags = dict(run.data.tags) if run else {}
    own = {k: v for k, v in metrics.items() if not k.startswith("baseline_")}
    baselines: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("baseline_"):
            # The longest name first: baseline_x_relative_mae is relative_mae's, not mae's.
            for metric in sorted(own, key=len, reverse=True):
                if key.endswith(f"_{metric}"):
                    baseline = key[len("baseline_") : -len(metric) - 1]
                    baselines.setdefault(baseline, {})[metric] = value
                    break
    version = str(found.version)  # as the registry writes it (07 is 7)
    kind = next(k for k, n in MODEL_NAMES.items() if n == name)
    created = datetime.fromtimestamp(found.creation_timestamp / 1000, tz=UTC)
    return {
        "name": name,
        "version": str(version),
        "aliases": sorted(a for a, v in model.aliases.items() if str(v) == str(version)),
        "run_id": found.run_id or "-",
        "created": created.strftime("%Y-%m-%d %H:%M"),
        "params": params,
        "gate": GATES[kind].metric,
        "metrics": own,
        "baselines": baselines,
        "decision": tags.get("clm.decision", "-"),
        "promoted": tags.get("clm.promoted", "-"),
        "champion": tags.get(CHAMPION_TAG, "-"),
        "warnings": [w for w in tags.get("clm.warnings", "").split(" | ") if w],
    }
