"""What the CLI commands do: each one function, printing a short summary to the terminal."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from clm.errors import ClmError
from clm.settings import ClmSettings, feature_meaning
from features import sources, synthetic
from features.online import shown_url
from features.snapshots import event_types_before, snapshot_table

__all__ = [
    "OUTPUT_WIDTH",
    "build_features",
    "generate_sample",
    "show_settings",
    "validate_data",
    "write_report",
    "write_table",
]

# Off a terminal (a log, a pipe) rich would wrap and cut tables at 80 columns.
OUTPUT_WIDTH = None if sys.stdout.isatty() else 200
console = Console(width=OUTPUT_WIDTH)


def _summary(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


def generate_sample(
    out: Path, *, customers: int, seed: int, start: date, end: date, fmt: str, replace: bool = False
) -> None:
    if fmt not in ("parquet", "csv"):
        raise ClmError(f"--format {fmt}: expected parquet or csv")
    started = time.perf_counter()
    data = synthetic.generate(customers, seed=seed, start=start, end=end)
    paths = synthetic.write(data, out, fmt=fmt, replace=replace)
    rows = [(name, f"{_rows(getattr(data, name).num_rows)} -> {p}") for name, p in paths.items()]
    rows.append(("time", f"{time.perf_counter() - started:.1f} s"))
    _summary(f"Sample data: {customers:,} people, seed {seed}, {start} to {end}", rows)


def validate_data(location: Path, settings: ClmSettings) -> sources.Dataset:
    dataset = sources.load_with(location, settings.data)
    first, last = dataset.date_range()
    # What building features would refuse of the whole history: NPS answers outside 0-10,
    # event types that name the same columns, too many types.
    types = (
        event_types_before(dataset, as_of=last.date() + timedelta(days=1), settings=settings)
        if last is not None
        else []
    )
    rows = [
        (table, f"{_rows(dataset.row_counts.get(table, 0))} from {label}")
        for table, label in dataset.sources.items()
    ]
    zone = "" if dataset.timezone == "UTC" else f" ({dataset.timezone} local time)"
    rows.append(("period", f"{first} .. {last}{zone}"))
    if dataset.has("events"):
        rows.append(("event types", ", ".join(types) or "none"))
    if dataset.attributes:
        attrs = ", ".join(f"{k} ({v})" for k, v in dataset.attributes.items())
        rows.append(("customer attributes", attrs))
    for table, unread in dataset.unread.items():
        if unread:  # e.g. a notes column, or a status the mapping does not name
            shown = ", ".join(unread[:8]) + (
                f" and {len(unread) - 8} more" if len(unread) > 8 else ""
            )
            rows.append((f"{table}: not read", shown))
    _summary(f"{location}: valid", rows)
    return dataset


def check_table_out(out: Path) -> None:
    """Refuse an output name write_table cannot write, before any work is done."""
    if not out.name.lower().endswith((".parquet", ".pq", ".csv")):
        raise ClmError(f"--out {out}: expected a .parquet or .csv file name")


def write_table(table: pa.Table, out: Path) -> None:
    """Write Parquet or CSV by extension, via a temporary file renamed at the end."""
    check_table_out(out)
    suffix = out.name.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if suffix.endswith(".csv"):
        pacsv.write_csv(table, partial)
    else:
        pq.write_table(table, partial, use_dictionary=dictionary_columns(table))
    os.replace(partial, out)


def dictionary_columns(table: pa.Table, sample: int = 20_000) -> list[str]:
    """The columns worth dictionary-encoding in Parquet: all but floating-point ones, and
    those with few distinct values in the first ``sample`` rows (a share, a score, a trend of
    small counts). A float column of spends or rates fills the dictionary page and falls
    back to plain encoding after the work of building it: on the benchmark's 1M-row
    snapshot this writes in 1.7 s instead of 2.3 s, 45 MB instead of 43 MB."""
    head = table.slice(0, sample)
    return [
        f.name
        for f in table.schema
        if not pa.types.is_floating(f.type)
        or pc.count_distinct(head.column(f.name)).as_py() <= max(10, head.num_rows // 10)
    ]


def build_features(
    location: Path, as_of: date, out: Path, settings: ClmSettings, *, labels: bool = False
) -> None:
    check_table_out(out)
    sources.check_out_is_no_input(out, location)
    started = time.perf_counter()
    dataset = sources.load_with(location, settings.data)
    loaded = time.perf_counter()
    table = snapshot_table(dataset, as_of=as_of, settings=settings, labels=labels)
    built = time.perf_counter()
    write_table(table, out)
    stages = table.group_by("stage").aggregate([("customer_id", "count")]).to_pylist()
    counts = ", ".join(
        f"{r['stage']} {r['customer_id_count']:,}"
        for r in sorted(stages, key=lambda r: -r["customer_id_count"])
    )
    _summary(
        f"Features as of {as_of}",
        [
            ("customers", f"{table.num_rows:,}"),
            ("columns", f"{table.num_columns}"),
            ("stages", counts),
            ("output", str(out)),
            (
                "time",
                f"load+validate {loaded - started:.1f} s, features {built - loaded:.1f} s, "
                f"write {time.perf_counter() - built:.1f} s",
            ),
        ],
    )


def write_report(
    location: Path, as_of: date, out: Path, settings: ClmSettings, *, scores: Path | None = None
) -> None:
    from reporting.html import number, percent, render
    from reporting.metrics import build_report, read_scores

    if not out.name.lower().endswith((".html", ".htm")):
        raise ClmError(f"--out {out}: expected an .html file name")
    started = time.perf_counter()
    from serving.decision import NO_ACTION

    actions = [*settings.decision.actions, NO_ACTION]
    scored = read_scores(scores, as_of, actions) if scores is not None else None
    dataset = sources.load_with(location, settings.data)
    report = build_report(
        dataset,
        as_of=as_of,
        settings=settings,
        source=str(location),
        scores=scored,
        scores_source=str(scores) if scores is not None else None,
    )
    for note in report.notes:  # on the page, and here: a partial scores file, say
        warnings.warn(note, UserWarning, stacklevel=2)
    page = render(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, out)
    k = report.kpis
    rows = [
        ("customers", f"{number(k['customers'])} ({number(k['active_buyers'])} active buyers)"),
        ("churned last month", f"{percent(k['churn_rate_last_month'])} of active buyers"),
        ("NPS (365 days)", number(k["nps"], 1)),
        ("CLV", report.clv_source),
        ("output", f"{out} ({len(page.encode()) / 1e6:.1f} MB)"),
        ("time", f"{time.perf_counter() - started:.1f} s"),
    ]
    for note in report.notes:
        rows.append(("note", note))
    _summary(f"Lifecycle report as of {as_of}", rows)


def show_settings(settings: ClmSettings) -> None:
    """The effective settings, as a clm.toml would hold them."""
    for section, values in settings.model_dump(exclude_none=True).items():
        fields = type(getattr(settings, section)).model_fields
        print(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                continue
            print(f"# {fields[key].description}")
            if key == "api_token":  # a secret: never printed
                print("# api_token = (set; not shown)")
                continue
            if key == "online_store":
                value = shown_url(value)
            print(f"{key} = {_toml_value(value)}")
        if section == "serving" and "api_token" not in values and os.environ.get("CLM_API_TOKEN"):
            print(f"# {fields['api_token'].description}")
            print("# api_token = (set by CLM_API_TOKEN; not shown)")
        for key, value in values.items():
            if isinstance(value, dict):
                for table, mapping in value.items():
                    print(f"\n[{section}.{key}.{_toml_key(table)}]")
                    for column, source in mapping.items():
                        print(f"{_toml_key(column)} = {_toml_value(source)}")
        print()


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").isalnum() else _toml_value(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _champions_checked(settings: ClmSettings, as_of: date) -> dict[str, str] | None:
    """The champions' versions, once the settings give their features the meaning they were
    trained with (None: materialized before any training, or no registry yet)."""
    from mlflow.exceptions import MlflowException

    from serving.scoring import champion_versions, check_feature_meaning

    try:
        _, versions = champion_versions(settings)
    except (ClmError, MlflowException):
        return None
    check_feature_meaning(versions, settings, as_of=as_of)  # and in-sample, as clm score
    return versions


def _check_data_for_champions(
    dataset: sources.Dataset, columns: set[str], as_of: date, settings: ClmSettings,
    types: list[str], versions: dict[str, str] | None,
) -> None:  # fmt: skip
    """The service scores from the store: data without the features or the events the
    champions were trained with is refused or warned about as clm score does (no champions
    yet: nothing to check)."""
    from features.snapshots import check_champion_features, check_trained_event_types
    from serving.scoring import champion_features

    if versions is None:
        return
    names = champion_features(versions)
    check_champion_features(names, columns, as_of=as_of, settings=settings)
    check_trained_event_types(names, dataset, as_of=as_of, settings=settings, event_types=types)


def materialize_features(location: Path, as_of: date, settings: ClmSettings) -> None:
    """Write every customer's features at ``as_of`` to the online store (atomically)."""
    from features.online import open_store
    from features.snapshots import build_snapshot, event_types_before, new_customer_row
    from serving.middleware import api_token

    started = time.perf_counter()
    versions = _champions_checked(settings, as_of)  # before the slow work
    dataset = sources.load_with(location, settings.data)
    types = event_types_before(dataset, as_of=as_of, settings=settings)
    snapshot = build_snapshot(dataset, as_of=as_of, settings=settings, event_types=types)
    new_customer = new_customer_row(dataset, as_of=as_of, settings=settings, event_types=types)
    _check_data_for_champions(dataset, set(snapshot.columns), as_of, settings, types, versions)
    store = open_store(settings.serving.online_store)
    written = store.write(snapshot, new_customer, feature_meaning(settings))
    _summary(
        f"Online store as of {as_of}",
        [
            ("customers", f"{written:,}"),
            ("store", shown_url(settings.serving.online_store)),
            ("time", f"{time.perf_counter() - started:.1f} s"),
        ],
    )
    buyers = snapshot[snapshot["stage"].isin(["retention", "advocacy"])]
    example = (buyers if len(buyers) else snapshot)["customer_id"].iloc[0]
    serving = settings.serving
    body = json.dumps({"customers": [{"customer_id": str(example)}]})
    auth = ' -H "Authorization: Bearer $CLM_API_TOKEN"' if api_token(serving) else ""
    print(
        f"Score a customer (with clm serve running):\ncurl -s -X POST "
        f"http://{serving.host}:{serving.port}/score -H 'Content-Type: application/json'"
        f"{auth} -d '{body}'"
    )


def score_customers(
    data: Path, as_of: date, out: Path, settings: ClmSettings, **options: Any
) -> None:
    """``clm score``: see serving.batch."""
    from serving.batch import BatchRequest, score_batch

    request = BatchRequest(data=data, as_of=as_of, out=out, **options)
    summary = score_batch(request, settings)

    def counts(counter: Any) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in counter.most_common())

    _summary(
        f"Scores as of {as_of}",
        [
            ("customers", f"{summary.rows:,} ({summary.unknown:,} unknown, scored as new)"),
            ("stages", counts(summary.by_stage)),
            ("churn risk", counts(summary.by_risk)),
            ("actions", counts(summary.by_action)),
            ("cut by budget", f"{summary.cut_by_budget:,}"),
            ("expected value", f"{summary.expected_value:,.0f}"),
            ("models", ", ".join(f"{k} v{v}" for k, v in summary.versions.items())),
            ("output", str(out)),
            ("time", f"{summary.seconds:.1f} s" + _steps(summary.timings)),
        ],
    )


def _steps(timings: dict[str, float]) -> str:
    return f" ({', '.join(f'{k} {v:.1f} s' for k, v in timings.items())})" if timings else ""
