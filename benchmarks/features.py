"""Feature pipeline benchmark: 1,000,000 customers, ~10M transactions, ~20M events.

Prints, each as the median of ``--repeat`` runs on this machine:

* the bare baseline: one DuckDB GROUP BY over the transactions Parquet file;
* RFM: the purchase-day rollup plus the RFM query, on the loaded transactions, and its ratio
  to the baseline (target: within 2x);
* ``clm features build`` end to end (load + validate + RFM + engagement + stage + write) in a
  fresh process, with its peak memory (targets: under 30 s and under 8 GiB).

The sample is generated once and cached in benchmarks/.cache (git-ignored).
Run: ``make bench-features`` or ``.venv/bin/python benchmarks/features.py [--customers N]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# This file is named like the package it measures: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import duckdb  # noqa: E402

from clm.settings import ClmSettings  # noqa: E402
from features import sources, synthetic  # noqa: E402
from features.rfm import rfm_query  # noqa: E402
from features.rollups import ROLLUPS  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
AS_OF = date(2025, 7, 1)


def sample(customers: int) -> Path:
    folder = CACHE / f"sample-{customers}"
    if not (folder / "events.parquet").exists():
        started = time.perf_counter()
        data = synthetic.generate(customers, seed=1, start=date(2023, 1, 1), end=date(2026, 1, 1))
        synthetic.write(data, folder)
        print(f"generated {customers:,} customers in {time.perf_counter() - started:.1f} s")
    return folder


def timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bare_group_by(folder: Path) -> float:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    path = folder / "transactions.parquet"
    return timed(
        lambda: con.execute(
            f"CREATE OR REPLACE TEMP TABLE bare AS SELECT customer_id, count(*), sum(amount), "
            f"max(timestamp) FROM read_parquet('{path}') GROUP BY customer_id"
        )
    )


def rfm_time(dataset: sources.Dataset) -> tuple[float, float]:
    """Seconds for the rollup plus the RFM query, and for the query alone."""
    con = dataset.con
    for name in ROLLUPS:
        con.execute(f"DROP TABLE IF EXISTS {name}")
    query = rfm_query(as_of=AS_OF, settings=ClmSettings().features)

    def rollup() -> None:
        for name, sql in ROLLUPS.items():
            con.execute(f"CREATE TABLE {name} AS {sql}")

    def rfm() -> None:
        # Materialised, so that the optimiser cannot drop unused columns.
        con.execute(f"CREATE OR REPLACE TEMP TABLE rfm AS {query.sql}")

    rolled, queried = timed(rollup), timed(rfm)
    return rolled + queried, queried


def features_build(folder: Path) -> tuple[float, float]:
    """Seconds and peak GiB of ``clm features build`` in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features.parquet"
        command = [
            sys.executable, "-m", "clm", "features", "build",
            "--data", str(folder), "--as-of", AS_OF.isoformat(), "--out", str(out),
        ]  # fmt: skip
        code = (
            "import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, *command], check=True, capture_output=True, text=True
        )
    seconds, max_rss_kib = result.stdout.split()
    return float(seconds), int(max_rss_kib) / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    generation = timed(
        lambda: synthetic.generate(100_000, seed=2, start=date(2023, 1, 1), end=date(2026, 1, 1))
    )
    print(f"generate 100,000 people: {generation:.1f} s (target < 60 s)")
    folder = sample(args.customers)
    con = duckdb.connect()
    counts = {
        name: con.execute(
            f"SELECT count(*) FROM read_parquet('{folder}/{name}.parquet')"
        ).fetchall()[0][0]
        for name in ("transactions", "events", "customers")
    }
    print(
        f"data: {args.customers:,} people, {counts['transactions']:,} transactions, "
        f"{counts['events']:,} events, {counts['customers']:,} customer rows"
    )

    load_times, rfm_times, query_times, bare_times = [], [], [], []
    for _ in range(args.repeat):
        bare_times.append(bare_group_by(folder))
        started = time.perf_counter()
        dataset = sources.load(folder)
        load_times.append(time.perf_counter() - started)
        total, query_only = rfm_time(dataset)
        rfm_times.append(total)
        query_times.append(query_only)
        bare_times.append(bare_group_by(folder))
        del dataset
    bare, rfm = statistics.median(bare_times), statistics.median(rfm_times)
    print(f"bare DuckDB GROUP BY over transactions.parquet: {bare:.2f} s (median)")
    print(f"load + validate (all tables): {statistics.median(load_times):.2f} s")
    print(
        f"RFM (purchase-day rollup + RFM query): {rfm:.2f} s = {rfm / bare:.2f}x bare (target 2x)"
    )
    print(f"RFM query alone on the shared rollup: {statistics.median(query_times):.2f} s")

    builds = [features_build(folder) for _ in range(args.repeat)]
    seconds = statistics.median(b[0] for b in builds)
    peak = max(b[1] for b in builds)
    print(
        f"clm features build end to end: {seconds:.1f} s median "
        f"(runs: {', '.join(f'{b[0]:.1f}' for b in builds)}; target < 30 s), "
        f"peak memory {peak:.2f} GiB (target < 8 GiB)"
    )
    print(
        f"this process peak: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB"
    )


if __name__ == "__main__":
    main()
