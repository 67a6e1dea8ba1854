"""What ``clm train`` and ``clm models`` do (imported only by those commands: MLflow is slow
to import)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clm.commands import OUTPUT_WIDTH
from clm.errors import ClmError
from clm.settings import ClmSettings
from training.jobs import KINDS, TrainRequest, train
from training.registry import (
    GATES,
    MODEL_NAMES,
    champion_version,
    configure_tracking,
    list_versions,
    promote,
    rollback,
    version_details,
    version_horizons,
)

__all__ = ["list_models", "promote_model", "rollback_model", "show_model", "train_models"]

console = Console(width=OUTPUT_WIDTH)
# The service loads the champions when it starts (clm score and the pyfunc read them anew).
RESTART_NOTE = "a running clm serve keeps the champions it loaded: restart it to serve this one"


def train_models(
    what: str,
    *,
    data: Path,
    as_of: date,
    settings: ClmSettings,
    horizon_days: int | None,
    clv_horizon_days: int | None,
    tune: bool,
    trials: int | None,
    experiment: str | None,
) -> None:
    """Train ``all`` or one of churn / stage / clv and print what was registered."""
    if what != "all" and what not in KINDS:
        raise ClmError(f"model '{what}' is not one of all, {', '.join(KINDS)}")
    request = TrainRequest(
        data=data,
        as_of=as_of,
        kinds=KINDS if what == "all" else (what,),
        horizon_days=horizon_days,
        clv_horizon_days=clv_horizon_days,
        tune=tune,
        trials=trials,
        experiment=experiment,
    )
    result = train(request, settings, console=Console(stderr=True))
    table = Table(title=f"Training run {result.run_id}", title_justify="left")
    for column in ("model", "version", "champion", "gate metric", "baselines", "decision"):
        table.add_column(column)
    for kind, outcome in result.models.items():
        promoted = "yes" if outcome["promoted"] else "no"
        metric = GATES[kind].metric
        baselines = ", ".join(
            f"{name} {figures[metric]:.4f}"
            for name, figures in outcome.get("baselines", {}).items()
            if metric in figures
        )
        value = outcome["metrics"].get(metric)
        shown = f"{metric} {value:.4f}" if value is not None else metric
        table.add_row(
            MODEL_NAMES[kind], outcome["version"], promoted, shown, baselines or "-",
            outcome["reason"],
        )  # fmt: skip
    console.print(table)


def _known(name: str) -> str:
    if name in MODEL_NAMES:
        return MODEL_NAMES[name]
    if name in MODEL_NAMES.values():
        return name
    raise ClmError(f"model '{name}' is not one of {', '.join(MODEL_NAMES.values())}")


def list_models(settings: ClmSettings) -> None:
    configure_tracking(settings.training, create=False)
    table = Table(
        title="Registered models",
        title_justify="left",
        caption="value: the gate metric on the version's evaluation fold, of the model its "
        "run fitted without that fold (the registered one is refitted on every cutoff)",
        caption_justify="left",
    )
    columns = ("name", "version", "aliases", "gate metric", "value", "evaluated on", "as of",
               "horizon (days)", "created (UTC)")  # fmt: skip
    for column in columns:
        table.add_column(column)
    rows = list_versions()
    for row in rows:
        value = "-" if row["metric"] is None else f"{row['metric']:.4f}"
        aliases = ", ".join(row["aliases"]) or "-"
        table.add_row(
            row["name"], row["version"], aliases, row["gate"], value, row["evaluated_on"],
            row["as_of"], row["horizon"], row["created"],
        )  # fmt: skip
    console.print(table if rows else "no registered clm models yet: run clm train")


def show_model(name: str, version: str | None, settings: ClmSettings) -> None:
    """One version (the champion by default): what it was trained for, its metrics beside
    the baselines', the gate's decision, its run's warnings and whether the settings now
    would score with it."""
    from clm.settings import MEANING_KEY, feature_meaning, meaning_changes
    from clm.tracking import logged_metadata

    configure_tracking(settings.training, create=False)
    shown = version_details(_known(name), version)
    params = shown["params"]
    facts = Table(
        title=f"{shown['name']} version {shown['version']}", title_justify="left",
        show_header=False,
    )  # fmt: skip
    facts.add_column("", style="bold")
    facts.add_column("")
    rows = [
        ("aliases", ", ".join(shown["aliases"]) or "-"),
        ("serving", shown["champion"]),
        ("run", f"{shown['run_id']} (created {shown['created']} UTC)"),
        ("as of", params.get("as_of", "-")),
        ("horizon", f"{params.get('horizon_days', '-')} days ({params.get('method', '-')})"),
        ("training cutoffs", params.get("training_cutoffs", "-").replace(",", ", ")),
        ("evaluated on", f"the fold at {params.get('evaluation_cutoff', '-')}"),
        ("gate", f"{shown['gate']}: {shown['decision']}"),
    ]
    for label, value in rows:
        facts.add_row(label, value)
    console.print(facts)
    metrics = Table(
        title="Metrics on the evaluation fold (the model fitted without it)",
        title_justify="left",
    )
    baselines = sorted(shown["baselines"])
    for column in ("metric", f"v{shown['version']}", *(f"baseline {b}" for b in baselines)):
        metrics.add_column(column)
    for metric in sorted(shown["metrics"], key=lambda m: (m != shown["gate"], m)):
        figures = [shown["baselines"][b].get(metric) for b in baselines]
        metrics.add_row(
            metric + (" (gate)" if metric == shown["gate"] else ""),
            f"{shown['metrics'][metric]:.4f}",
            *("-" if f is None else f"{f:.4f}" for f in figures),
        )
    console.print(metrics)
    for warning in shown["warnings"]:
        console.print(f"warning at training: {warning}")
    trained = logged_metadata(shown["name"], shown["version"]).get(MEANING_KEY)
    changes = meaning_changes(trained, feature_meaning(settings)) if trained else []
    if changes:
        console.print(
            f"note: trained with {'; '.join(changes[:5])}: clm score and the service refuse "
            "it under the settings now"
        )


def promote_model(name: str, version: str, settings: ClmSettings) -> None:
    configure_tracking(settings.training, create=False)
    name = _known(name)
    replaced = promote(name, version, how="by hand")
    if replaced == version:
        console.print(f"{name} version {version} is @champion already: nothing changed")
        return
    console.print(f"{name} version {version} is now @champion")
    _say_horizon_change(name, replaced, version)
    _say_settings_apart(name)
    console.print(RESTART_NOTE)


def _say_settings_apart(name: str) -> None:
    """Champions trained under other feature settings than each other cannot be scored
    together under any settings: said, naming the others (checked again at scoring)."""
    from clm.settings import MEANING_KEY, meaning_changes
    from clm.tracking import logged_metadata

    versions = {n: v for n in MODEL_NAMES.values() if (v := champion_version(n)) is not None}
    kept = {n: logged_metadata(n, v).get(MEANING_KEY) for n, v in versions.items()}
    mine = kept.get(name)
    changes = [
        change
        for other, theirs in kept.items()
        if other != name and mine and theirs
        for change in meaning_changes(mine, theirs, f"{other} v{versions[other]}:")
    ]
    if changes:
        console.print(
            f"note: version {versions[name]} was trained with {'; '.join(changes[:3])}: clm "
            "score and the service refuse champions of other settings until they agree "
            "(promote models trained alike)"
        )


def _say_horizon_change(name: str, old: str | None, new: str) -> None:
    """A new champion for another horizon changes what the scores answer for: said."""
    horizons = version_horizons(name, [v for v in (old, new) if v is not None])
    if old is not None and horizons.get(old) != horizons.get(new):
        console.print(
            f"note: version {new} predicts a {horizons.get(new, '?')}-day horizon, version "
            f"{old} {horizons.get(old, '?')} days: scores now answer for "
            f"{horizons.get(new, '?')} days"
        )


def rollback_model(name: str, settings: ClmSettings) -> None:
    configure_tracking(settings.training, create=False)
    name = _known(name)
    current = champion_version(name)
    version = rollback(name)
    console.print(f"{name}: @champion is back on version {version}")
    _say_horizon_change(name, current, version)
    _say_settings_apart(name)
    console.print(RESTART_NOTE)
