"""``clm score``: score a customer list (or every known customer) into a file.

Features come from the same snapshot code as training (:func:`features.snapshots.build_snapshot`
at ``as_of``); the three ``@champion`` models and the decision policy are those of the service
(:mod:`serving.scoring`). Rows are scored in chunks of ``CHUNK_ROWS`` and each chunk is written
out as soon as it is scored, so the output never has to fit in memory; what stays is the action
and its value per customer, for the budget (see :class:`_Output`). The output is written to a
temporary file beside the target and renamed at the end, so an interrupted run never leaves a
file that looks complete. The model versions go into the output's rows and, for Parquet, its
metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress

from clm.errors import DataError
from clm.settings import TABLES, ClmSettings
from features.contract import (
    MAX_WHOLE_ID,
    MISSING_MARKERS,
    csv_delimiter,
    ragged_record,
    row_places,
)
from features.segments import RfmScale
from features.snapshots import (
    build_snapshot,
    check_champion_features,
    check_trained_event_types,
    event_types_before,
    fill_absent_event_types,
    new_customer_row,
)
from features.sources import Dataset, check_out_is_no_input, excel_table, load_with
from features.sql import as_of_datetime
from features.stages import STAGES
from serving.decision import NO_ACTION, Decisions, apply_budget
from serving.scoring import (
    Champions,
    Scorer,
    Scores,
    champion_versions,
    check_feature_meaning,
    load_champions,
)

__all__ = [
    "BatchRequest",
    "BatchSummary",
    "feature_columns",
    "fill_new_customers",
    "read_customer_list",
    "score_batch",
    "score_frame",
]

CHUNK_ROWS = 50_000
OUTPUTS = {".parquet": ".parquet", ".pq": ".parquet", ".csv": ".csv"}  # suffix -> format


def output_kind(path: Path) -> str | None:
    """The format an output name asks for (.parquet or .csv, in any case), None if neither."""
    return OUTPUTS.get(path.suffix.lower())


@dataclass(frozen=True)
class BatchRequest:
    data: Path
    as_of: date
    out: Path
    customers: Path | None = None
    horizon_days: int | None = None
    clv_horizon_days: int | None = None
    budget: int | None = None
    engine: str = "local"

    def horizons_asked(self) -> list[tuple[str, int]]:
        """The horizons asked for other than the trained ones, by option."""
        asked = (
            ("--horizon-days", self.horizon_days),
            ("--clv-horizon-days", self.clv_horizon_days),
        )
        return [(option, days) for option, days in asked if days is not None]


@dataclass
class BatchSummary:
    rows: int = 0
    unknown: int = 0
    cut_by_budget: int = 0
    by_stage: Counter[str] = field(default_factory=Counter)
    by_risk: Counter[str] = field(default_factory=Counter)
    by_action: Counter[str] = field(default_factory=Counter)
    expected_value: float = 0.0
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def read_customer_list(path: Path, id_names: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV, Parquet or Excel list with a ``customer_id`` column (other columns are carried).

    ``id_names``: the columns the data's mapping reads as ``customer_id``; a list without a
    ``customer_id`` column may name its ids so (a list exported from the same system)."""
    if not path.is_file():
        raise DataError(f"{path}: customer list not found")
    lowered = path.name.lower()
    if not lowered.endswith((".parquet", ".pq", ".csv", ".csv.gz", ".xlsx")):
        raise DataError(f"{path}: expected a .csv, .csv.gz, .parquet or .xlsx customer list")
    is_csv = lowered.endswith((".csv", ".csv.gz"))
    sheet_rows: list[int] | None = None  # a workbook's rows as Excel numbers them
    wanted = {name.casefold() for name in ("customer_id", *id_names)}
    try:
        if is_csv:
            # Separated as the data's files may be (a European spreadsheet's ';', a tab).
            sep = csv_delimiter(path)
            header = pd.read_csv(path, sep=sep, nrows=0, index_col=False).columns
            # index_col=False: a first row with one field too many is no index column (pandas
            # would shift every id one column); it warns, and the warning is an error here.
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(
                    path,
                    sep=sep,
                    dtype={name: str for name in header if str(name).casefold() in wanted},
                    keep_default_na=False,
                    index_col=False,
                )
        elif lowered.endswith(".xlsx"):  # a campaign list from a spreadsheet: cells as text
            sheet = excel_table(path)
            sheet_rows = sheet.column("_row").to_pylist()
            frame = sheet.drop_columns(["_row"]).to_pandas()
        else:
            frame = pd.read_parquet(path)
    except DataError:
        raise
    except pd.errors.ParserWarning as exc:
        raise DataError(
            f"{path}: not a readable customer list "
            f"({ragged_record(path, csv_delimiter(path), more_only=True)})"
        ) from exc
    except Exception as exc:  # any reader's error: named with the file
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: not a readable customer list ({message})") from exc
    frame = frame.rename(columns=_id_columns_by_case(frame.columns, ("customer_id", *id_names)))
    label = "customer_id"  # how messages name the ids' column
    if "customer_id" in frame.columns:
        mapped = [name for name in id_names if name in frame.columns]
        places = _list_places(path if is_csv else None, sheet_rows)
        _refuse_differing_id_columns(frame, mapped, path, places)
    else:
        mapped = [name for name in id_names if name in frame.columns]
        if len(mapped) > 1:
            raise DataError(
                f"{path}: columns {' and '.join(map(repr, mapped))} are both mapped to "
                "customer_id; keep one or name it customer_id"
            )
        if not mapped:
            also = f" or {' / '.join(map(repr, id_names))} (mapped)" if id_names else ""
            raise DataError(
                f"{path}: no customer_id column{also} "
                f"(found {', '.join(map(str, frame.columns[:10]))})"
            )
        frame = frame.rename(columns={mapped[0]: "customer_id"})
        label = f"'{mapped[0]}' (mapped to customer_id)"
    if frame.empty:
        raise DataError(f"{path}: the customer list has no rows (expected one customer a row)")

    places = _list_places(path if is_csv else None, sheet_rows)
    ids = _id_text(frame["customer_id"], path, places)
    # A missing-value marker (NULL, N/A) is no id, as the data's logs refuse it.
    empty = ids.isna() | (ids == "") | ids.str.lower().isin(MISSING_MARKERS)
    if empty.any():
        rows = (np.flatnonzero(empty.to_numpy()) + 1)[:5].tolist()
        raise DataError(
            f"{path}: column {label}: {int(empty.sum())} ids empty or a missing-value marker "
            f"(NULL, N/A, ...; expected text), first at {places(rows)}"
        )
    duplicated = ids.duplicated()
    if duplicated.any():
        first = ids[duplicated].iloc[0]
        rows = (np.flatnonzero((ids == first).to_numpy()) + 1)[:2].tolist()
        raise DataError(
            f"{path}: column {label}: {int(duplicated.sum())} duplicated ids, "
            f"first {first!r} at {places(rows)}; each customer once"
        )
    frame["customer_id"] = ids.astype(str)
    return frame


def _list_places(csv_path: Path | None, sheet_rows: list[int] | None) -> Callable[[list[int]], str]:
    """How a list's messages name its rows (1-based): with a CSV file's lines, or as a
    workbook's sheet numbers them."""

    def places(rows: list[int]) -> str:
        if sheet_rows is not None:
            return ", ".join(f"row {sheet_rows[r - 1]}" for r in rows)
        return ", ".join(row_places(csv_path, rows).values())

    return places


def _refuse_differing_id_columns(
    frame: pd.DataFrame, mapped: list[str], path: Path, places: Callable[[list[int]], str]
) -> None:
    """A list with both ``customer_id`` and a column the mapping reads as ``customer_id`` is
    ambiguous unless the two hold the same ids, read as ids are (2474.0 is 2474, spaces
    trimmed): a scored list carrying its source column."""
    ids = _id_text(frame["customer_id"], path, places).fillna("")
    for name in mapped:
        other = _id_text(frame[name], path, places).fillna("")
        differs = (other != ids).to_numpy()
        if differs.any():
            row = int(np.flatnonzero(differs)[0]) + 1
            raise DataError(
                f"{path}: columns customer_id and {name!r} (mapped to customer_id) hold "
                f"different ids ({int(differs.sum())} rows, first at {places([row])}: "
                f"{ids.iloc[row - 1]!r} vs {other.iloc[row - 1]!r}); keep one, or rename "
                "the other"
            )


def _id_columns_by_case(columns: pd.Index, names: tuple[str, ...]) -> dict[str, str]:
    """Renames of a list's columns that spell an id name in another case (``Customer_ID``),
    as the data's columns are matched; none when the exact name is there."""
    renames = {}
    for name in names:
        if name in columns:
            continue
        spelled = [c for c in columns if str(c).casefold() == name.casefold()]
        if len(spelled) == 1:
            renames[spelled[0]] = name
    return renames


def _mapped_id_names(settings: ClmSettings) -> tuple[str, ...]:
    """The source names the column mapping gives ``customer_id`` (every table first)."""
    columns = settings.data.columns
    names = (columns.get(table, {}).get("customer_id") for table in ("*", *TABLES))
    return tuple(dict.fromkeys(name for name in names if name and name != "customer_id"))


def warn_unknown_list_ids(dataset: Dataset, listing: pd.DataFrame | None, path: Path) -> None:
    """A list most of whose ids the data does not name at all is most likely written another
    way (an Excel export that dropped leading zeros, other case): say so, with the ids that
    match once zeros and case are ignored; and so for any id that matches so, however few.
    They are still scored, as new customers."""
    if listing is None or listing.empty:
        return
    con = dataset.con
    ids = pa.table({"customer_id": listing["customer_id"].astype(str).to_numpy()})
    con.register("_listed", ids)
    try:
        logs = (
            "SELECT customer_id FROM transactions UNION ALL SELECT customer_id FROM events "
            "UNION ALL SELECT customer_id FROM customers"
        )
        # The logs' ids are filtered by the (small) list first: the hash table is the list's.
        unknown = [
            r[0]
            for r in con.execute(
                f"SELECT customer_id FROM _listed EXCEPT SELECT customer_id FROM ({logs}) AS t "
                "WHERE customer_id IN (SELECT customer_id FROM _listed) ORDER BY 1"
            ).fetchall()
        ]
        if not unknown:
            return
        shown = ", ".join(repr(u) for u in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        message = (
            f"{path}: {len(unknown):,} of the list's {len(listing):,} ids are in no table of "
            f"the data ({shown}); they are scored as new customers"
        )
        con.register("_unknown", pa.table({"customer_id": pa.array(unknown, pa.string())}))
        similar = con.execute(
            f"""
            WITH data AS (SELECT DISTINCT customer_id FROM ({logs}) AS t
                          WHERE lower(ltrim(customer_id, '0')) IN
                              (SELECT lower(ltrim(customer_id, '0')) FROM _unknown)),
            pairs AS (SELECT u.customer_id AS listed, min(d.customer_id) AS written
                      FROM _unknown u JOIN data d
                      ON lower(ltrim(u.customer_id, '0')) = lower(ltrim(d.customer_id, '0'))
                      GROUP BY 1)
            SELECT listed, written, count(*) OVER () FROM pairs ORDER BY listed LIMIT 3
            """
        ).fetchall()
        if similar:
            pairs = ", ".join(f"{a!r} ~ {b!r}" for a, b, _ in similar)
            message += (
                f"; {similar[0][2]:,} match an id of the data once leading zeros and case are "
                f"ignored ({pairs}): write them as the data does"
            )
        # New prospects on a campaign list are no news; an id written another way is.
        if similar or len(unknown) * 2 > len(listing):
            warnings.warn(message, UserWarning, stacklevel=3)
    finally:
        con.unregister("_listed")
        con.unregister("_unknown")  # a name never registered is no error


def warn_long_horizons(dataset: Dataset, request: BatchRequest) -> None:
    """A horizon asked for that is longer than the history before the cutoff: the models
    extrapolate it (the training section says how) past any span the data shows."""
    first, _ = dataset.date_range()
    if first is None:
        return
    history = (as_of_datetime(request.as_of) - first).days
    if history <= 0:  # nothing before the cutoff: the snapshot refuses it
        return
    for option, days in request.horizons_asked():
        if days > history:
            warnings.warn(
                f"{option} {days:,} is longer than the {history:,} days of history before "
                "--as-of: the models extrapolate it past any span the data shows",
                UserWarning,
                stacklevel=3,
            )


def _id_text(values: pd.Series, path: Path, places: Callable[[list[int]], str]) -> pd.Series:
    """Ids as text without surrounding spaces, as the data's ids are read: a float column
    (pandas writes integer ids with gaps as 2474.0) gives whole numbers as integer text."""
    if pd.api.types.is_float_dtype(values.dtype):
        number = values.to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            whole = (number == np.trunc(number)) & (np.abs(number) < MAX_WHOLE_ID)
        bad = ~np.isnan(number) & ~whole
        if bad.any():
            rows = (np.flatnonzero(bad) + 1)[:5].tolist()
            raise DataError(
                f"{path}: column customer_id: {int(bad.sum())} ids not whole numbers below "
                f"2^53 in size (expected text or a whole number), first at {places(rows)}"
            )
        values = values.astype("Int64")
    elif not (
        pd.api.types.is_string_dtype(values.dtype)
        or pd.api.types.is_integer_dtype(values.dtype)
        or values.dtype == object
    ):
        raise DataError(
            f"{path}: column customer_id has type {values.dtype} (expected text or whole numbers)"
        )
    return values.astype("string").str.strip(" ")  # spaces, as DuckDB's trim


def feature_columns(frame: pd.DataFrame, text: set[str], names: list[str]) -> dict[str, np.ndarray]:
    """The named columns of ``frame`` as arrays: objects for text, floats (NaN) for numbers."""
    columns: dict[str, np.ndarray] = {}
    for name in names:
        values = frame[name]
        if name in text:
            columns[name] = np.asarray(values.astype(object).where(values.notna(), None))
        else:
            columns[name] = pd.to_numeric(values).to_numpy(dtype=float, na_value=np.nan)
    return columns


def fill_new_customers(rows: pd.DataFrame, known: np.ndarray, new_customer: dict[str, Any]) -> None:
    """Give the rows of unknown ids (``~known``) the features of a customer with no history
    (a column turns to objects only when its type cannot hold the value)."""
    if known.all():
        return
    unknown = ~known
    for name, value in new_customer.items():
        if name not in rows.columns:
            continue
        column = rows[name]
        if value is None:
            value = np.nan if pd.api.types.is_float_dtype(column) else None
        fits = (
            pd.api.types.is_float_dtype(column)
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ) or (pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column))
        if not fits:
            rows[name] = column.astype(object)
        rows.loc[unknown, name] = value


def _rows_to_score(
    wanted: pd.DataFrame | None, snapshot: pd.DataFrame, new_customer: dict[str, Any]
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame | None]:
    """The feature rows in output order, whether each id was known, and carried columns."""
    if wanted is None:
        return snapshot, np.ones(len(snapshot), dtype=bool), None
    known = wanted["customer_id"].isin(snapshot["customer_id"]).to_numpy()
    indexed = snapshot.set_index("customer_id")
    rows = indexed.reindex(wanted["customer_id"]).reset_index()
    fill_new_customers(rows, known, new_customer)
    carried = wanted.drop(columns=["customer_id"])
    return rows, known, carried


def segments_of(rows: pd.DataFrame, scale: RfmScale) -> np.ndarray:
    """The RFM segment of each row (None for a customer who never bought)."""
    return scale.segments(
        rows["days_since_last_purchase"].to_numpy(dtype=float, na_value=np.nan),
        rows["purchase_days"].to_numpy(dtype=float, na_value=np.nan),
    )


def score_frame(
    ids: np.ndarray, known: np.ndarray, s: Scores, reasons: list[str], segments: np.ndarray
) -> pd.DataFrame:
    """The output rows of a chunk (the columns of the README's batch section)."""
    out = pd.DataFrame(
        {
            "customer_id": ids,
            "known": known,
            "stage": s.stage,
            # Text even in a chunk without a buyer (the file's types come from the first).
            "rfm_segment": pd.array(segments, dtype="string"),
            "churn_probability": s.churn_probability,
            "churn_risk": s.churn_risk,
            "next_stage": s.next_stage.astype(str),
        }
    )
    for j, stage in enumerate(STAGES):
        out[f"probability_{stage}"] = s.stage_probabilities[:, j]
    out["expected_purchases"] = s.expected_purchases
    out["expected_spend"] = s.expected_spend
    out["clv"] = s.clv
    out["action"] = s.action.astype(str)
    out["action_value"] = s.action_value
    names = np.asarray(reasons, dtype=object)[s.top_features]
    for k in range(s.top_features.shape[1]):
        out[f"reason_{k + 1}"] = names[:, k]
        out[f"reason_{k + 1}_contribution"] = s.top_contributions[:, k]
    return out


def output_metadata(request: BatchRequest, versions: dict[str, str]) -> dict[bytes, str]:
    """What a Parquet output records beside its rows: the model versions, the cutoff
    (``clm report --scores`` refuses scores of another cutoff) and each model's horizon in
    days (the trained one unless --horizon-days / --clv-horizon-days asked for another)."""
    from mlflow import MlflowClient  # the store champion_versions pointed MLflow at
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    asked = {"clm-churn": request.horizon_days, "clm-stage": request.horizon_days}
    asked["clm-clv"] = request.clv_horizon_days
    horizons = {}
    for name, version in versions.items():
        trained = None
        try:  # a run deleted since: the horizon is unknown (null), the scores are not
            run_id = client.get_model_version(name, version).run_id
            trained = client.get_run(run_id).data.params.get("horizon_days") if run_id else None
        except MlflowException:
            pass
        days = asked.get(name) or trained
        horizons[name] = int(days) if days is not None else None
    return {
        b"clm.model_versions": json.dumps(versions),
        b"clm.as_of": request.as_of.isoformat(),
        b"clm.horizon_days": json.dumps(horizons),
    }


class _Output:
    """The output file, written a chunk at a time to a temporary file beside it.

    Without a budget, chunks go straight into the temporary file of the output's format.
    With one, they go into a spill file first (Arrow IPC, which reads back exactly the types
    it was given): the budget can only be applied once every customer's action is known, so
    :meth:`finish` streams the spill into the output with the cut actions replaced, a batch
    at a time. Either way memory holds one chunk of output, and the output appears (renamed
    over ``out``) only when complete. A Parquet output records the model versions and the
    cutoff in its metadata. ``carried``: the customer list's other columns, one row per
    output row; one named like an output column is written as ``input_NAME``.
    """

    def __init__(
        self,
        request: BatchRequest,
        versions: dict[str, str],
        spill: bool,
        carried: pd.DataFrame | None = None,
    ) -> None:
        out = self.out = request.out
        self.metadata = output_metadata(request, versions)
        self.partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
        self.spill = out.with_name(f".{out.name}.{os.getpid()}.spill") if spill else None
        self.carried = carried
        self.carried_table: pa.Table | None = None
        self.writer: Any = None
        self.frame_schema: pa.Schema | None = None
        self.schema: pa.Schema | None = None

    def _open(self, path: Path, kind: str) -> Any:
        assert self.schema is not None
        if kind == "spill":
            return pa.ipc.new_file(str(path), self.schema)
        if kind == ".parquet":
            metadata = {**(self.schema.metadata or {}), **self.metadata}
            return pq.ParquetWriter(path, self.schema.with_metadata(metadata))
        return pacsv.CSVWriter(path, self.schema)

    def _start(self, frame: pd.DataFrame) -> None:
        """The schema, from the first chunk and the whole customer list, and the writer."""
        self.frame_schema = pa.Schema.from_pandas(frame, preserve_index=False)
        fields = list(self.frame_schema)
        heads = [frame.iloc[:0]]
        if self.carried is not None:
            taken = set(frame.columns)
            carried = self.carried.rename(
                columns={c: f"input_{c}" for c in self.carried.columns if c in taken}
            )
            self.carried_table = pa.Table.from_pandas(carried, preserve_index=False)
            fields += list(self.carried_table.schema)
            heads.append(carried.iloc[:0])
        # The pandas metadata of both parts, so that readers get the pandas types back.
        pandas = pa.Schema.from_pandas(pd.concat(heads, axis=1), preserve_index=False)
        self.schema = pa.schema(fields, metadata=pandas.metadata)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.spill is not None:
            self.writer = self._open(self.spill, "spill")
        else:
            self.writer = self._open(self.partial, output_kind(self.out) or ".parquet")

    def append(self, frame: pd.DataFrame, start: int) -> None:
        """Write one chunk of rows, the output's rows ``start`` onwards."""
        if self.writer is None:
            self._start(frame)
        assert self.schema is not None
        table = pa.Table.from_pandas(frame, schema=self.frame_schema, preserve_index=False)
        if self.carried_table is not None:
            carried = self.carried_table.slice(start, len(frame))
            for name in carried.column_names:
                table = table.append_column(carried.field(name), carried.column(name))
        self.writer.write_table(table.replace_schema_metadata(self.schema.metadata))

    def finish(self, action: np.ndarray, value: np.ndarray) -> None:
        """Close; from a spill, write the output with these actions and values; rename the
        output over ``out``."""
        writer, self.writer = self.writer, None
        writer.close()
        if self.spill is not None:
            self.writer = self._open(self.partial, output_kind(self.out) or ".parquet")
            with pa.memory_map(str(self.spill)) as source:
                spilled = pa.ipc.open_file(source)
                start = 0
                for i in range(spilled.num_record_batches):
                    table = pa.Table.from_batches([spilled.get_batch(i)])
                    end = start + len(table)
                    for name, values in (("action", action), ("action_value", value)):
                        index = table.schema.get_field_index(name)
                        field = table.schema.field(index)
                        column = pa.array(values[start:end], type=field.type)
                        table = table.set_column(index, field, column)
                    self.writer.write_table(table)
                    start = end
            writer, self.writer = self.writer, None
            writer.close()
        os.replace(self.partial, self.out)

    def discard(self) -> None:
        """Remove the temporary files (after a failure: an error closing the writer must not
        hide the one that stopped the run, nor keep the files)."""
        writer, self.writer = self.writer, None
        try:
            if writer is not None:
                with contextlib.suppress(OSError, pa.ArrowException):
                    writer.close()
        finally:
            for path in (self.partial, self.spill):
                if path is not None:
                    path.unlink(missing_ok=True)


def output_fields(reasons: int) -> list[tuple[str, str]]:
    """The columns of :func:`score_frame`, in order, with their Spark SQL types (the one list
    of them: the Spark engine's schema is built from it)."""
    fields = [("customer_id", "string"), ("known", "boolean"), ("stage", "string"),
              ("rfm_segment", "string"), ("churn_probability", "double"), ("churn_risk", "string"),
              ("next_stage", "string")]  # fmt: skip
    fields += [(f"probability_{stage}", "double") for stage in STAGES]
    fields += [("expected_purchases", "double"), ("expected_spend", "double"), ("clv", "double"),
               ("action", "string"), ("action_value", "double")]  # fmt: skip
    for k in range(1, reasons + 1):
        fields += [(f"reason_{k}", "string"), (f"reason_{k}_contribution", "double")]
    return fields


VERSION_COLUMNS = ("version_churn", "version_stage", "version_clv")


def output_names(reasons: int) -> set[str]:
    """The columns score_batch writes (before carried ones)."""
    return {name for name, _ in output_fields(reasons)} | set(VERSION_COLUMNS)


def _check_carried(listing: pd.DataFrame, path: Path, out: Path, reasons: int) -> None:
    """The list's other columns can be carried to ``out``: names that stay distinct once a
    name the output has becomes ``input_<name>``, and plain values for a CSV file."""
    taken = output_names(reasons)
    names = [str(c) for c in listing.columns if c != "customer_id"]
    renamed = [f"input_{n}" if n in taken else n for n in names]
    clash = next((n for n in renamed if renamed.count(n) > 1 or n in taken), None)
    if clash is not None:
        raise DataError(
            f"{path}: column {clash!r}: the output would have it twice (a list column "
            f"named like an output column is carried as input_<name>); rename it"
        )
    if output_kind(out) == ".csv":
        table = pa.Table.from_pandas(listing[names], preserve_index=False)
        nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
        if nested:
            raise DataError(
                f"{path}: column {nested[0]!r}: lists or structs cannot go to a CSV "
                "file; write .parquet or drop the column"
            )


def _checked_champions(settings: ClmSettings, as_of: date, checked: Future[None]) -> Champions:
    """The champions, once their feature settings are checked against ``settings`` (and
    their training cutoff against ``as_of``): ``checked`` holds the check's outcome, so that
    a refusal is known before the models load."""
    try:
        _, versions = champion_versions(settings)
        check_feature_meaning(versions, settings, as_of=as_of)
    except BaseException as error:
        checked.set_exception(error)
        raise
    checked.set_result(None)
    return load_champions(settings, settings.training.n_jobs, versions)


def score_batch(
    request: BatchRequest, settings: ClmSettings, console: Console | None = None
) -> BatchSummary:
    """Score, decide, apply the budget, write; see the module doc."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    if output_kind(request.out) is None:
        raise DataError(f"--out {request.out}: expected a .parquet or .csv file name")
    if request.engine not in ("local", "spark"):
        raise DataError(f"--engine {request.engine}: expected local or spark")
    for option, days in request.horizons_asked():
        if not days >= 1:
            raise DataError(f"{option} {days}: expected a whole number of days >= 1")
    if request.engine == "spark" and output_kind(request.out) != ".parquet":
        raise DataError(f"--out {request.out}: the Spark engine writes partitioned .parquet")
    if request.engine == "local" and request.out.is_dir():
        raise DataError(
            f"--out {request.out}: a folder (a Spark run's output?); remove it or name a file"
        )
    lists = [("--customers", request.customers)] if request.customers is not None else []
    check_out_is_no_input(request.out, request.data, *lists)
    # The list is checked before any slow work (features, models, Spark).
    listing = None
    if request.customers is not None:
        listing = read_customer_list(request.customers, _mapped_id_names(settings))
        _check_carried(listing, request.customers, request.out, settings.serving.reasons)
    if request.engine == "spark":
        from serving.spark import score_with_spark

        fields, versions = score_with_spark(request, settings, listing)
        return BatchSummary(**fields, seconds=time.perf_counter() - started, versions=versions)
    timings: dict[str, float] = {}
    # The models load (MLflow, unpickling) while DuckDB builds the features: DuckDB releases
    # the GIL, so the two overlap. Their settings are checked first, and a refusal is said
    # once the data is read, before the features are built.
    checked: Future[None] = Future()
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(_checked_champions, settings, request.as_of, checked)
        dataset = load_with(request.data, settings.data)
        checked.result()  # the champions' settings (waits for them on small data)
        timings["load"] = time.perf_counter() - started
        warn_long_horizons(dataset, request)
        if request.customers is not None:
            warn_unknown_list_ids(dataset, listing, request.customers)
        types = event_types_before(dataset, as_of=request.as_of, settings=settings)
        snapshot = build_snapshot(
            dataset, as_of=request.as_of, settings=settings, event_types=types
        )
        new_customer = new_customer_row(
            dataset, as_of=request.as_of, settings=settings, event_types=types
        )
        timings["features"] = time.perf_counter() - started - timings["load"]
        champions = loading.result()
    scorer = Scorer(champions, settings, new_customer)
    check_trained_event_types(
        scorer.columns, dataset, as_of=request.as_of, settings=settings, event_types=types
    )
    scoring_started = time.perf_counter()
    # Segments rank each customer among every buyer at the cutoff, listed or not.
    scale = RfmScale.of(snapshot["days_since_last_purchase"], snapshot["purchase_days"])
    rows, known, carried = _rows_to_score(listing, snapshot, new_customer)
    names = scorer.columns
    fill_absent_event_types(rows, names, settings)
    check_champion_features(names, set(rows.columns), as_of=request.as_of, settings=settings)
    summary = BatchSummary(unknown=int((~known).sum()), versions=champions.versions)
    # What the budget needs of every row: the action and its value (a few bytes a customer).
    actions, values = [], []
    spill = request.budget is not None
    output = _Output(request, champions.versions, spill, carried)
    try:
        # Off a terminal the bar would only leave an empty line on stderr.
        with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task("scoring", total=len(rows))
            for start in range(0, len(rows), CHUNK_ROWS):
                chunk = rows.iloc[start : start + CHUNK_ROWS]
                scores = scorer.compute(
                    feature_columns(chunk, scorer.text, names),
                    request.horizon_days,
                    request.clv_horizon_days,
                )
                frame = score_frame(
                    chunk["customer_id"].to_numpy(), known[start : start + CHUNK_ROWS], scores,
                    scorer.reason_feature, segments_of(chunk, scale),
                )  # fmt: skip
                for name, version in champions.versions.items():
                    frame[f"version_{name.removeprefix('clm-')}"] = version
                output.append(frame, start)
                summary.rows += len(frame)
                summary.by_stage.update(frame["stage"])
                summary.by_risk.update(frame["churn_risk"])
                actions.append(scores.action)
                values.append(scores.action_value)
                progress.advance(task, len(chunk))
        if not summary.rows:
            raise DataError("no customer to score: the data has no customer known before --as-of")
        decisions = Decisions(np.concatenate(actions), np.concatenate(values))
        summary.cut_by_budget = apply_budget(
            decisions, scorer.policy, request.budget, rows["customer_id"].to_numpy()
        )
        timings["scoring"] = time.perf_counter() - scoring_started
        written = time.perf_counter()
        output.finish(decisions.action, decisions.value)
        timings["write"] = time.perf_counter() - written
    finally:
        output.discard()
    summary.by_action = Counter(decisions.action)
    summary.expected_value = float(decisions.value[decisions.action != NO_ACTION].sum())
    summary.seconds = time.perf_counter() - started
    summary.timings = timings
    return summary
