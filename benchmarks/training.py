"""Training benchmark: ``clm train all`` (no tuning) on 100,000 customers.

Prints the wall time and peak memory of the command (target: under 3 minutes on this
machine), the time of each step as logged in the MLflow run (features, each model,
logging), and each model's evaluation metrics beside its baselines.

The sample is generated once and cached in benchmarks/.cache (git-ignored); the MLflow
store is a temporary SQLite file.
Run: ``make bench-training`` or ``.venv/bin/python benchmarks/training.py [--customers N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# This file is named like the package it measures: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from mlflow import MlflowClient  # noqa: E402

from features import synthetic  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
AS_OF = date(2025, 7, 1)
SHOWN = {
    "churn": ("auc", "log_loss", "baseline_recency_auc", "baseline_recency_log_loss",
              "baseline_bgnbd_auc", "baseline_bgnbd_log_loss", "auc_buyers",
              "baseline_recency_auc_buyers", "baseline_bgnbd_auc_buyers"),
    "stage": ("log_loss", "macro_f1", "baseline_markov_log_loss", "baseline_markov_macro_f1"),
    "clv": ("mae", "normalized_gini", "top_decile_capture", "baseline_bgnbd_gamma_gamma_mae",
            "baseline_bgnbd_gamma_gamma_normalized_gini"),
}  # fmt: skip


def sample(customers: int) -> Path:
    folder = CACHE / f"sample-{customers}"
    if not (folder / "events.parquet").exists():
        data = synthetic.generate(customers, seed=1, start=date(2023, 1, 1), end=date(2026, 1, 1))
        synthetic.write(data, folder)
    return folder


def run_train(folder: Path, store: Path) -> tuple[float, float]:
    """Seconds and peak GiB of ``clm train all`` in a child process."""
    command = [
        sys.executable, "-m", "clm", "train", "all",
        "--data", str(folder), "--as-of", AS_OF.isoformat(),
    ]  # fmt: skip
    code = (
        "import os, resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = {"PATH": "/usr/bin:/bin", "CLM_TRAINING__TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
    result = subprocess.run(
        [sys.executable, "-c", code, *command], check=True, capture_output=True, text=True,
        env=env,
    )  # fmt: skip
    seconds, max_rss_kib = result.stdout.split()
    return float(seconds), int(max_rss_kib) / 1024**2


def report(store: Path) -> None:
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("clm")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    print("steps (s):")
    for key, value in sorted(parent.data.metrics.items()):
        print(f"  {key.removeprefix('time_').removesuffix('_s'):<40} {value:7.1f}")
    for run in runs:
        kind = run.data.params.get("kind")
        if kind in SHOWN:
            shown = ", ".join(f"{k}={run.data.metrics[k]:.4f}" for k in SHOWN[kind])
            print(f"{kind}: {shown}")
            print(f"  method: {run.data.params.get('method')}; {run.data.tags.get('clm.decision')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    args = parser.parse_args()
    started = time.perf_counter()
    folder = sample(args.customers)
    print(f"data: {args.customers:,} people ({time.perf_counter() - started:.1f} s to prepare)")
    with tempfile.TemporaryDirectory() as tmp:
        seconds, peak = run_train(folder, Path(tmp))
        print(f"clm train all: {seconds:.1f} s (target < 180 s), peak memory {peak:.2f} GiB")
        report(Path(tmp))


if __name__ == "__main__":
    main()
