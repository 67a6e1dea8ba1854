"""The ``clm`` command: thin Typer commands that parse options and call one function each.

A failing command prints one line on stderr (``error: ...``) and exits 1; ``--debug`` adds the
traceback. Dates are ``YYYY-MM-DD``.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, NoReturn, TextIO

import typer

from clm import interrupts
from clm.errors import ClmError, ConfigError
from clm.settings import ClmSettings, load_settings, parse_column_mapping

__all__ = ["app", "main"]

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    help="Customer lifecycle predictions: sample data, point-in-time features, models, scores.",
    no_args_is_help=True,
    context_settings=HELP,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Sample data and validation of your own data.", no_args_is_help=True, context_settings=HELP
)
features_app = typer.Typer(
    help="Point-in-time features.", no_args_is_help=True, context_settings=HELP
)
config_app = typer.Typer(help="Settings.", no_args_is_help=True, context_settings=HELP)
models_app = typer.Typer(
    help="Registered models and their aliases.", no_args_is_help=True, context_settings=HELP
)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")


@dataclass
class _State:
    config: Path | None = None
    debug: bool = False


state = _State()


def parse_date(value: str, option: str) -> date:
    """``YYYY-MM-DD`` or a ConfigError naming the option."""
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} '{value}' is not a date; expected YYYY-MM-DD") from None


def _settings(columns: list[str] | None = None) -> ClmSettings:
    settings = load_settings(state.config)
    if columns:
        merged = {t: dict(m) for t, m in settings.data.columns.items()}
        given = parse_column_mapping(columns)
        # The command line wins: --column amount=net replaces the settings file's mapping
        # of amount for every table, not only its mapping for all tables.
        for target in given.get("*", {}):
            for mapping in merged.values():
                mapping.pop(target, None)
        for table, mapping in given.items():
            merged.setdefault(table, {}).update(mapping)
        settings.data.columns = merged
    return settings


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Settings file (default: $CLM_CONFIG, else ./clm.toml if present)."
    ),
]
DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Folder with transactions/events/customers (.csv, .parquet, .jsonl or .xlsx) "
        "or a .duckdb",
    ),
]
AsOfOption = Annotated[
    str,
    typer.Option(
        "--as-of", metavar="YYYY-MM-DD", help="Cutoff: only rows before this day are used."
    ),
]
ColumnOption = Annotated[
    list[str] | None,
    typer.Option(
        "--column",
        metavar="[TABLE.]COLUMN=NAME",
        help="Map a contract column to your file's column, e.g. timestamp=order_date (repeat).",
    ),
]


@app.callback()
def root(
    config: ConfigOption = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the traceback when a command fails, and where warnings come from."
        ),
    ] = False,
) -> None:
    """Customer lifecycle predictions."""
    state.config = config
    state.debug = debug
    if not debug:  # MLflow's INFO and WARNING chatter (read before mlflow is imported)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tables into.")],
    customers: Annotated[
        int, typer.Option("--customers", min=1, help="Number of people to simulate.")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
    start: Annotated[
        str, typer.Option("--start", metavar="YYYY-MM-DD", help="First day of the log.")
    ] = "2023-01-01",
    end: Annotated[
        str, typer.Option("--end", metavar="YYYY-MM-DD", help="Day after the last day of the log.")
    ] = "2026-01-01",
    fmt: Annotated[str, typer.Option("--format", help="File format: parquet or csv.")] = "parquet",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace table files in --out that clm data generate did not write."
        ),
    ] = False,
) -> None:
    """Write realistic sample transactions, events and customers."""
    from clm.commands import generate_sample

    generate_sample(
        out,
        customers=customers,
        seed=seed,
        start=parse_date(start, "--start"),
        end=parse_date(end, "--end"),
        fmt=fmt,
        replace=force,
    )


@data_app.command("validate")
def data_validate(data: DataOption, column: ColumnOption = None) -> None:
    """Check your data against the contract and summarise it."""
    from clm.commands import validate_data

    validate_data(data, _settings(column))


@features_app.command("build")
def features_build(
    data: DataOption,
    as_of: AsOfOption,
    out: Annotated[Path, typer.Option("--out", help="Output file: .parquet or .csv.")],
    column: ColumnOption = None,
    labels: Annotated[
        bool,
        typer.Option("--labels/--no-labels", help="Add the label_* targets after the cutoff."),
    ] = False,
    horizon_days: Annotated[
        int | None,
        typer.Option(
            "--horizon-days", min=1, help="Churn and stage label horizon (default: settings)."
        ),
    ] = None,
    clv_horizon_days: Annotated[
        int | None,
        typer.Option("--clv-horizon-days", min=1, help="CLV label horizon (default: settings)."),
    ] = None,
) -> None:
    """Build one feature row per customer known before --as-of."""
    from clm.commands import build_features

    settings = _settings(column)
    asked = {"--horizon-days": horizon_days, "--clv-horizon-days": clv_horizon_days}
    given = [option for option, days in asked.items() if days is not None]
    if given and not labels:
        raise ClmError(f"{given[0]}: a label horizon, for --labels only")
    horizons = {
        **({"churn_horizon_days": horizon_days, "stage_horizon_days": horizon_days}
           if horizon_days is not None else {}),
        **({"clv_horizon_days": clv_horizon_days} if clv_horizon_days is not None else {}),
    }  # fmt: skip
    if horizons:
        settings = settings.model_copy(
            update={"labels": settings.labels.model_copy(update=horizons)}
        )
    build_features(data, parse_date(as_of, "--as-of"), out, settings, labels=labels)


@features_app.command("materialize")
def features_materialize(data: DataOption, as_of: AsOfOption, column: ColumnOption = None) -> None:
    """Write every customer's features at --as-of to the online store the service reads."""
    from clm.commands import materialize_features

    materialize_features(data, parse_date(as_of, "--as-of"), _settings(column))


@app.command("train")
def train(
    data: DataOption,
    as_of: AsOfOption,
    what: Annotated[
        str, typer.Argument(help="Which model: all, churn, stage or clv.", show_default=True)
    ] = "all",
    horizon_days: Annotated[
        int | None,
        typer.Option("--horizon-days", min=1, help="Churn and stage horizon (default: settings)."),
    ] = None,
    clv_horizon_days: Annotated[
        int | None,
        typer.Option("--clv-horizon-days", min=1, help="CLV horizon (default: settings)."),
    ] = None,
    tune: Annotated[
        bool, typer.Option("--tune/--no-tune", help="Tune with Optuna on the training folds.")
    ] = False,
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, help="Optuna trials per model (default: settings)."),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="MLflow experiment (default: settings).")
    ] = None,
    column: ColumnOption = None,
) -> None:
    """Backtest, evaluate, log to MLflow, register and promote the models."""
    from clm.model_commands import train_models

    train_models(
        what,
        data=data,
        as_of=parse_date(as_of, "--as-of"),
        settings=_settings(column),
        horizon_days=horizon_days,
        clv_horizon_days=clv_horizon_days,
        tune=tune,
        trials=trials,
        experiment=experiment,
    )


@app.command("score")
def score(
    data: DataOption,
    as_of: AsOfOption,
    out: Annotated[Path, typer.Option("--out", help="Output file: .parquet or .csv.")],
    customers: Annotated[
        Path | None,
        typer.Option(
            "--customers",
            help="CSV/Parquet/Excel list with a customer_id column, or its mapped name "
            "(default: every known customer).",
        ),
    ] = None,
    horizon_days: Annotated[
        int | None,
        typer.Option("--horizon-days", min=1, help="Churn and stage horizon (default: trained)."),
    ] = None,
    clv_horizon_days: Annotated[
        int | None,
        typer.Option("--clv-horizon-days", min=1, help="CLV horizon (default: trained)."),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option("--budget", min=0, help="Most costly actions (default: decision.budget)."),
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="local (one machine) or spark.")
    ] = "local",
    column: ColumnOption = None,
) -> None:
    """Score customers with the @champion models and decide an action for each."""
    from clm.commands import score_customers

    settings = _settings(column)
    score_customers(
        data, parse_date(as_of, "--as-of"), out, settings, customers=customers,
        horizon_days=horizon_days, clv_horizon_days=clv_horizon_days,
        budget=budget if budget is not None else settings.decision.budget, engine=engine,
    )  # fmt: skip


@app.command("report")
def report(
    data: DataOption,
    as_of: AsOfOption,
    out: Annotated[Path, typer.Option("--out", help="Output HTML file.")],
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores",
            help="Output of clm score (.parquet/.csv, or the folder of --engine spark): adds "
            "risk and actions.",
        ),
    ] = None,
    column: ColumnOption = None,
) -> None:
    """Write the lifecycle report (funnel, churn, value, NPS) as one self-contained HTML file."""
    from clm.commands import write_report

    write_report(data, parse_date(as_of, "--as-of"), out, _settings(column), scores=scores)


@app.command("serve")
def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to bind (default: serving.host, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port (default: serving.port, 3000)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes (default: serving.workers, else one per usable core).",
        ),
    ] = None,
) -> None:
    """Start the scoring service on the @champion models and the online store."""
    from clm.serve_command import serve as run

    run(_settings(), host, port, workers, state.config)


@models_app.command("list")
def models_list() -> None:
    """Every version of clm-churn, clm-stage and clm-clv with aliases and gate metric."""
    from clm.model_commands import list_models

    list_models(_settings())


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="clm-churn, clm-stage or clm-clv.")],
    version: Annotated[
        str | None, typer.Argument(help="The version to show; the @champion if not given.")
    ] = None,
) -> None:
    """One version: what it was trained for, its metrics beside the baselines', the gate."""
    from clm.model_commands import show_model

    show_model(name, version, _settings())


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="clm-churn, clm-stage or clm-clv.")],
    version: Annotated[str, typer.Argument(help="The version to make @champion.")],
) -> None:
    """Make a version the champion by hand."""
    from clm.model_commands import promote_model

    promote_model(name, version, _settings())


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="clm-churn, clm-stage or clm-clv.")],
) -> None:
    """Give @champion back to the previous champion."""
    from clm.model_commands import rollback_model

    rollback_model(name, _settings())


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as TOML."""
    from clm.commands import show_settings

    show_settings(_settings())


def _show_warning(  # the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A warning is one line on stderr, ``warning: ...`` (with --debug: where it came from)."""
    out = file or sys.stderr
    if state.debug:
        out.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    print(f"warning: {' '.join(str(message).split())}", file=out)


def main() -> None:
    """Entry point: run the app, turning errors into one line on stderr (and warnings)."""
    warnings.showwarning = _show_warning
    # SIGTERM (cron, systemd, Kubernetes) unwinds like Ctrl-C: every finally block runs, so
    # a killed run leaves no temporary files behind.
    previous = signal.signal(signal.SIGTERM, _terminated)
    previous_int = signal.signal(signal.SIGINT, _keyboard_interrupt)
    stop_watching = interrupts.watch(_seen)  # and stops DuckDB's queries (see clm.interrupts)
    try:
        _run()
    finally:
        stop_watching()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _seen(number: int) -> None:
    """On the signal watcher's thread: remember a SIGTERM before DuckDB's query fails."""
    if number == signal.SIGTERM:
        _signalled["SIGTERM"] = True


def _run() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except (typer.Abort, KeyboardInterrupt, _Terminated):
        _interrupted()
    except typer.TyperException as exc:  # usage errors: a missing or malformed option
        message = " ".join(exc.format_message().split())
        if message:  # (empty when the help was shown for a bare group)
            print(f"error: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (ClmError, ValueError, OSError) as exc:
        if state.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # unexpected: still one line unless --debug
        if _is_query_interruption(exc):  # Ctrl-C (or SIGTERM) while DuckDB ran a query
            _interrupted()
        if state.debug:
            traceback.print_exc()
        message = " ".join(str(exc).split())
        print(
            f"error: {type(exc).__name__}: {message} (run with --debug for details)",
            file=sys.stderr,
        )
        sys.exit(1)
    if code == 130:  # click returns Ctrl-C's code instead of raising, without standalone mode
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _interrupted() -> NoReturn:
    if _signalled["SIGTERM"]:  # DuckDB turns the handler's exception into its own
        print("error: terminated (SIGTERM)", file=sys.stderr)
        sys.exit(143)
    print("error: interrupted", file=sys.stderr)
    sys.exit(130)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread (not an Exception: no handler swallows it)."""


_signalled = {"SIGTERM": False}


def _query_interrupted() -> bool:
    """A DuckDB query's "Query interrupted" is unwinding (the signal watcher stopped the
    query before this handler ran): raising here, in a finally block, would cut it short."""
    error = sys.exc_info()[1]
    return error is not None and _is_query_interruption(error)


def _is_query_interruption(error: BaseException) -> bool:
    """DuckDB's error for a query stopped by a signal (its own check: "Query interrupted")
    or by ``interrupt()`` (the signal watcher: an InterruptException)."""
    return "Query interrupted" in str(error) or type(error).__name__ == "InterruptException"


def _keyboard_interrupt(signum: int, frame: object) -> None:
    if not _query_interrupted():
        raise KeyboardInterrupt


def _terminated(signum: int, frame: object) -> None:
    _signalled["SIGTERM"] = True
    if not _query_interrupted():
        raise _Terminated()
