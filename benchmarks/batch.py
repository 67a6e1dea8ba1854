"""Batch scoring benchmark: ``clm score`` on 1,000,000 customers, local and Spark.

Prints:
* the scoring part (three models + decisions on prepared feature columns) in customers/s,
  beside the raw ``inplace_predict`` throughput of the same boosters on the same rows
  (target: at least 100,000 customers/s and within 3x of the raw boosters);
* ``clm score`` end to end (features + models + decisions + write): time and peak memory
  (targets: under 60 s and 8 GiB);
* the same command with ``--engine spark`` (local mode), for comparison.

The 1M-people sample (benchmarks/.cache/sample-1000000, shared with benchmarks/features.py)
and the models (trained on 20,000 people, shared with benchmarks/serving.py) are cached.
Run: ``make bench-batch`` or ``.venv/bin/python benchmarks/batch.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# This file is named like nothing it imports, but keep the folder off the path like the others.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from clm.settings import ClmSettings  # noqa: E402
from features import synthetic  # noqa: E402
from features.snapshots import build_snapshot, event_types_before, new_customer_row  # noqa: E402
from features.sources import load  # noqa: E402
from serving.batch import feature_columns  # noqa: E402
from serving.scoring import Scorer, load_champions  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
AS_OF = "2025-07-01"
CHUNK = 50_000


def sample(people: int) -> Path:
    folder = CACHE / f"sample-{people}"
    if not (folder / "events.parquet").exists():
        data = synthetic.generate(people, seed=1, start=date(2023, 1, 1), end=date(2026, 1, 1))
        synthetic.write(data, folder)
    return folder


def models(env: dict[str, str]) -> None:
    """Champions trained on 20,000 people (the serving benchmark's, if cached)."""
    folder = CACHE / "serving-20000"
    if (folder / "mlflow.db").exists():
        return
    data = folder / "data"
    synthetic.write(
        synthetic.generate(20_000, seed=2, start=date(2023, 1, 1), end=date(2026, 1, 1)), data
    )
    subprocess.run(
        [sys.executable, "-m", "clm", "train", "all", "--data", str(data), "--as-of", AS_OF],
        check=True, env=env, capture_output=True,
    )  # fmt: skip


def timed_command(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "clm", *args],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    seconds, rss_kib = result.stdout.split()
    return float(seconds), int(rss_kib) / 1024**2


def scoring_throughput(folder: Path, settings: ClmSettings, contributions: str) -> None:
    settings = settings.model_copy(deep=True)
    settings.serving.contributions = contributions  # type: ignore[assignment]
    dataset = load(folder)
    as_of = date.fromisoformat(AS_OF)
    types = event_types_before(dataset, as_of=as_of, settings=settings)
    started = time.perf_counter()
    snapshot = build_snapshot(dataset, as_of=as_of, settings=settings, event_types=types)
    features = time.perf_counter() - started
    new = new_customer_row(dataset, as_of=as_of, settings=settings, event_types=types)
    scorer = Scorer(load_champions(settings, threads=0), settings, new)
    chunks = [
        feature_columns(snapshot.iloc[i : i + CHUNK], scorer.text, scorer.columns)
        for i in range(0, len(snapshot), CHUNK)
    ]
    c = scorer.champions
    # The raw boosters on the same rows: the matrices are built outside the clock.
    prepared = []
    for columns in chunks:
        matrix = c.churn.encoder_.transform(columns)
        augmented = c.clv._augment(columns, c.clv.label_horizon_days)
        clv_matrix = c.clv.encoder_.transform(augmented) if c.clv.encoder_ is not None else None
        prepared.append((matrix, clv_matrix))
    started = time.perf_counter()
    for matrix, clv_matrix in prepared:
        c.churn.booster_.inplace_predict(matrix)
        c.stage.booster_.inplace_predict(matrix)
        if clv_matrix is not None:
            c.clv.purchases_booster_.inplace_predict(clv_matrix)
            c.clv.spend_booster_.inplace_predict(clv_matrix)
    raw = time.perf_counter() - started
    started = time.perf_counter()
    for columns in chunks:
        scorer.compute(columns)
    scoring = time.perf_counter() - started
    n = len(snapshot)
    print(f"features of {n:,} customers: {features:.1f} s")
    print(f"scoring ({contributions} contributions): {n / scoring:,.0f} customers/s "
          f"({scoring:.1f} s); raw boosters: {n / raw:,.0f} customers/s; "
          f"ratio {scoring / raw:.1f}x (targets: >= 100,000/s, <= 3x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()
    store = (CACHE / "serving-20000").resolve()
    env = {**os.environ, "CLM_TRAINING__TRACKING_URI": f"sqlite:///{store}/mlflow.db",
           "CLM_TRAINING__EXPERIMENT": "bench"}  # fmt: skip
    models(env)
    folder = sample(args.people)
    settings = ClmSettings(training={"tracking_uri": env["CLM_TRAINING__TRACKING_URI"]})  # type: ignore[arg-type]
    for contributions in ("exact", "approx"):
        scoring_throughput(folder, settings, contributions)
    with tempfile.TemporaryDirectory() as tmp:
        for contributions in ("exact", "approx"):
            run_env = {**env, "CLM_SERVING__CONTRIBUTIONS": contributions}
            command = ["score", "--data", str(folder), "--as-of", AS_OF,
                       "--out", f"{tmp}/scores-{contributions}.parquet"]  # fmt: skip
            seconds, peak = timed_command(command, run_env)
            print(f"clm score end to end ({contributions} contributions): {seconds:.1f} s, "
                  f"peak {peak:.2f} GiB (targets: < 60 s, < 8 GiB)")  # fmt: skip
        if not args.no_spark:
            command = ["score", "--data", str(folder), "--as-of", AS_OF,
                       "--out", f"{tmp}/spark.parquet", "--engine", "spark"]  # fmt: skip
            seconds, peak = timed_command(command, env)
            print(f"clm score --engine spark (local[*]): {seconds:.1f} s, driver peak "
                  f"{peak:.2f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
