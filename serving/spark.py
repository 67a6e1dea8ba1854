"""``clm score --engine spark``: the same features and scores, computed by Spark.

* Data: the tables are loaded and validated once by :mod:`features.sources` (the data
  contract lives there) and handed to Spark as Parquet.
* Features: the rollups and the snapshot query are the DuckDB definitions of
  :mod:`features`, transpiled to Spark SQL by sqlglot (:func:`features.sql.to_spark`);
  there is no second copy of the feature logic.
* Scores: each Python worker loads the ``@champion`` models once and scores its Arrow
  batches with :class:`serving.scoring.Scorer` (native boosters in ``mapInPandas``), the
  code the local engine and the service use.
* Output: Parquet partitioned by stage, written to a temporary folder and renamed at the end.
  The folder's ``_common_metadata`` (the Parquet convention for a dataset's schema) records
  the model versions and the cutoff, as the local engine's file does in its own footer.

Workers run ``sys.executable`` (``PYSPARK_PYTHON``), or they would not find pandas.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from clm.errors import DataError
from clm.settings import ClmSettings
from features.rollups import ROLLUPS
from features.segments import RfmScale, scale_at
from features.snapshots import (
    check_champion_features,
    check_trained_event_types,
    event_types_before,
    fill_absent_event_types,
    new_customer_row,
    snapshot_sql,
)
from features.sources import Dataset, load_with
from features.sql import to_spark
from features.stages import STAGES
from serving.decision import NO_ACTION, Decisions, Policy, apply_budget

__all__ = ["score_with_spark", "spark_session"]

TABLES = ("transactions", "events", "customers")


# Spark's own log: errors only, on stderr (its default prints WARN lines, progress bars and
# where its profile came from on every run).
LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.console.ref = console
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


def _log_profile() -> Path:
    """LOG4J2 in a folder of this user's own (not a name in the shared temp folder that
    another user could create first), written atomically; its path."""
    folder = Path(tempfile.mkdtemp(prefix="clm-spark-log-"))  # mode 0700
    path = folder / "log4j2.properties"
    partial = folder / ".log4j2.properties.partial"
    partial.write_text(LOG4J2)
    os.replace(partial, path)
    return path


def spark_session(settings: ClmSettings) -> Any:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    if settings.spark.master.startswith("local"):  # no other address to look up and bind
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # PySpark 4 warns that pandas 3 is not fully supported; the Spark engine's output is
    # tested equal to the local engine's with the pinned pandas.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataError(
            "--engine spark needs PySpark: pip install 'clm[spark]' (make install does)"
        ) from None
    log_config = _log_profile()
    try:
        return _builder(SparkSession, settings, log_config).getOrCreate()
    finally:  # read by the JVM as it starts
        shutil.rmtree(log_config.parent, ignore_errors=True)


def _builder(session: Any, settings: ClmSettings, log_config: Path) -> Any:
    spark = settings.spark
    return (
        session.builder.master(spark.master)
        .appName("clm-score")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(spark.shuffle_partitions))
        .config("spark.driver.memory", spark.driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config}")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )


def _register(session: Any, dataset: Dataset, folder: Path) -> None:
    """Hand the validated tables to Spark (as Parquet) and build the rollups there."""
    for table in TABLES:
        path = folder / f"{table}.parquet"
        dataset.con.execute(f"COPY {table} TO '{path}' (FORMAT parquet)")
        session.read.parquet(str(path)).createOrReplaceTempView(table)
    for name, sql in ROLLUPS.items():
        session.sql(to_spark(sql)).cache().createOrReplaceTempView(name)


def _output_schema(reasons: int) -> str:
    from serving.batch import output_fields

    return ", ".join(f"{name} {kind}" for name, kind in output_fields(reasons))


_SCORERS: dict[str, Any] = {}


def _scorer(settings: ClmSettings, new_customer: dict[str, Any], versions: dict[str, str]) -> Any:
    """One Scorer per Python worker process and set of model versions (the models load
    once, not per batch): the versions the driver resolved, never @champion again, so that
    a promotion during the job or between jobs of one session cannot mix models."""
    from serving.scoring import Scorer, load_champions

    key = json.dumps([settings.model_dump_json(), sorted(versions.items())])
    if key not in _SCORERS:
        champions = load_champions(settings, versions=versions)
        _SCORERS[key] = Scorer(champions, settings, new_customer)
    return _SCORERS[key]


def _score_batches(
    settings: ClmSettings,
    new_customer: dict[str, Any],
    versions: dict[str, str],
    horizon_days: int | None,
    clv_horizon_days: int | None,
    scale: RfmScale,
) -> Any:
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from serving.batch import feature_columns, fill_new_customers, score_frame, segments_of

        scorer = _scorer(settings, new_customer, versions)
        for batch in batches:
            known = batch.pop("_known").to_numpy(dtype=bool)
            fill_new_customers(batch, known, new_customer)
            fill_absent_event_types(batch, scorer.columns, settings)
            columns = feature_columns(batch, scorer.text, scorer.columns)
            scores = scorer.compute(columns, horizon_days, clv_horizon_days)
            ids = batch["customer_id"].to_numpy()
            segments = segments_of(batch, scale)
            yield score_frame(ids, known, scores, scorer.reason_feature, segments)

    return score


def score_with_spark(
    request: Any, settings: ClmSettings, listing: pd.DataFrame | None = None
) -> tuple[dict[str, Any], Any]:
    """Score with Spark (``listing``: the customer list, read); returns the summary fields
    and the model versions."""
    from pyspark.sql import functions as F

    from serving.batch import output_metadata, warn_long_horizons, warn_unknown_list_ids
    from serving.scoring import champion_features, champion_versions, check_feature_meaning

    _, versions = champion_versions(settings)
    check_feature_meaning(versions, settings, as_of=request.as_of)
    dataset = load_with(request.data, settings.data)
    warn_long_horizons(dataset, request)
    if request.customers is not None:
        warn_unknown_list_ids(dataset, listing, request.customers)
    types = event_types_before(dataset, as_of=request.as_of, settings=settings)
    new_customer = new_customer_row(
        dataset, as_of=request.as_of, settings=settings, event_types=types
    )
    names = champion_features(versions)
    # The new-customer row has the snapshot's columns: a feature the data lacks is refused
    # before Spark starts, as the local engine refuses it.
    check_champion_features(names, set(new_customer), as_of=request.as_of, settings=settings)
    check_trained_event_types(
        names, dataset, as_of=request.as_of, settings=settings, event_types=types
    )
    # The buyers' recency and frequency, as the segments rank them (from DuckDB's rollup:
    # Spark's snapshot would be built twice to collect them).
    scale = scale_at(dataset.con, request.as_of)
    session = spark_session(settings)  # after the checks: bad data is refused at once
    with tempfile.TemporaryDirectory(prefix="clm-spark-") as tmp:
        _register(session, dataset, Path(tmp))
        sql = snapshot_sql(
            as_of=request.as_of, settings=settings, event_types=types,
            attributes=list(dataset.attributes), channels=dataset.channels(),
        )  # fmt: skip
        snapshot = session.sql(to_spark(sql)).drop("as_of")
        carried = None
        if listing is not None:
            wanted = session.createDataFrame(listing[["customer_id"]])
            rows = wanted.join(
                snapshot.withColumn("_known", F.lit(True)), "customer_id", "left"
            ).fillna({"_known": False})
            carried = listing
        else:
            rows = snapshot.withColumn("_known", F.lit(True))
        scored = rows.mapInPandas(
            _score_batches(
                settings,
                new_customer,
                dict(versions),
                request.horizon_days,
                request.clv_horizon_days,
                scale,
            ),
            schema=_output_schema(settings.serving.reasons),
        ).cache()
        total = scored.count()
        if total == 0:
            raise DataError("no customer to score: the data has no customer known before --as-of")
        cut = 0
        if request.budget is not None:
            scored, cut = _apply_budget(session, scored, settings, request.budget)
        for name, version in versions.items():
            scored = scored.withColumn(f"version_{name.removeprefix('clm-')}", F.lit(version))
        if carried is not None and len(carried.columns) > 1:
            extra = carried.rename(
                columns={
                    c: f"input_{c}"
                    for c in carried.columns
                    if c != "customer_id" and c in scored.columns
                }
            )
            scored = scored.join(session.createDataFrame(extra), "customer_id", "left")
        summary = _summary(scored, total, cut)
        _write(scored, request.out, output_metadata(request, dict(versions)))
    return summary, versions


def _apply_budget(session: Any, scored: Any, settings: ClmSettings, budget: int) -> tuple[Any, int]:
    """The local engine's budget rule (serving.decision.apply_budget) on the costly rows."""
    from pyspark.sql import functions as F

    policy = Policy(settings.decision, STAGES)
    costly = [name for name, action in policy.actions.items() if action.cost > 0]
    rows = (
        scored.filter(F.col("action").isin(costly))
        .select("customer_id", "action", "action_value")
        .toPandas()
    )
    decisions = Decisions(
        rows["action"].to_numpy(object, copy=True), rows["action_value"].to_numpy(copy=True)
    )
    cut = apply_budget(decisions, policy, budget, rows["customer_id"].to_numpy())
    if not cut:
        return scored, 0
    dropped = rows.loc[decisions.action == NO_ACTION, ["customer_id"]].assign(_cut=True)
    joined = scored.join(F.broadcast(session.createDataFrame(dropped)), "customer_id", "left")
    is_cut = F.coalesce(F.col("_cut"), F.lit(False))
    joined = joined.withColumn(
        "action", F.when(is_cut, F.lit(NO_ACTION)).otherwise(F.col("action"))
    )
    joined = joined.withColumn(
        "action_value", F.when(is_cut, F.lit(0.0)).otherwise(F.col("action_value"))
    )
    return joined.drop("_cut"), cut


def _summary(scored: Any, total: int, cut: int) -> dict[str, Any]:
    from pyspark.sql import functions as F

    def counts(column: str) -> Counter[str]:
        return Counter({r[column]: r["count"] for r in scored.groupBy(column).count().collect()})

    value = scored.filter(F.col("action") != NO_ACTION).agg(F.sum("action_value")).first()[0]
    unknown = scored.filter(~F.col("known")).count()
    return {
        "rows": total,
        "unknown": unknown,
        "cut_by_budget": cut,
        "by_stage": counts("stage"),
        "by_risk": counts("churn_risk"),
        "by_action": counts("action"),
        "expected_value": float(value or 0.0),
    }


def _write_common_metadata(folder: Path, metadata: dict[bytes, str]) -> None:
    """The dataset's schema (with the partition column) and ``metadata``, in
    ``folder/_common_metadata``; readers of the parts skip files named ``_*``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = next(folder.glob("stage=*/*.parquet"))
    schema = pq.read_schema(part)
    schema = schema.append(pa.field("stage", pa.string()))
    schema = schema.with_metadata({**(schema.metadata or {}), **metadata})
    pq.write_metadata(schema, folder / "_common_metadata")


def _write(scored: Any, out: Path, metadata: dict[bytes, str]) -> None:
    """Partitioned Parquet in a temporary folder beside ``out``, renamed over it at the end."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        scored.write.partitionBy("stage").parquet(str(partial))
        _write_common_metadata(partial, metadata)
        if out.exists():
            os.replace(out, old)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
