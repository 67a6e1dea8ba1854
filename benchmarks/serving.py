"""Serving benchmark: ``clm serve`` under wrk, beside a bare FastAPI + uvicorn baseline.

Models are trained once on a cached sample (20,000 people) and the online store is
materialized; both live in benchmarks/.cache (git-ignored). The four servers are started
together and take turns (one driven at a time: this machine has two cores): each of
``--rounds`` rounds drives every level on every server for ``--seconds / --rounds``, and each
figure is the median over the rounds, so a slow spell of this noisy machine hits all alike:

* single customers by id at concurrency 1, 8 and 32 (each request a random known id);
* 100-customer requests at concurrency 8.

The baseline is the least a scoring endpoint can do: FastAPI parses the same body, reads
the same store and runs the same churn booster with ``inplace_predict``, nothing else.
The service runs three times: as configured by default (one worker per usable core, exact
contributions, TreeSHAP, behind the reasons), which the targets are for; with one worker
(``--workers 1``); and with one worker and approximate contributions
(serving.contributions = "approx"). The bare app is one process; its saturated throughput
is the baseline of every service's ratio.
Printed: requests/s, p50 and p99 latency, customers/s, and the ratios to the baseline.
Run: ``make bench-serving`` (installs wrk from Debian when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# This file is named like the package it measures: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import httpx  # noqa: E402

from clm.settings import usable_cores  # noqa: E402
from features import synthetic  # noqa: E402
from serving.client import free_port, wait_for_workers  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
AS_OF = "2025-07-01"
LUA = """
local ids = {%s}
local batch = %d
math.randomseed(%d)
request = function()
  local parts = {}
  for i = 1, batch do
    parts[i] = '{"customer_id":"' .. ids[math.random(#ids)] .. '"}'
  end
  return wrk.format("POST", "/score", {["Content-Type"] = "application/json"},
    '{"customers":[' .. table.concat(parts, ",") .. ']}')
end
"""
BASELINE = """
import json, os, sqlite3
import mlflow, numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

uri = os.environ["CLM_TRAINING__TRACKING_URI"]
mlflow.set_tracking_uri(uri); mlflow.set_registry_uri(uri)
churn = mlflow.pyfunc.load_model("models:/clm-churn@champion").unwrap_python_model().estimator
churn.booster_.set_param({"nthread": 1})
encoder = churn.encoder_
store = sqlite3.connect(os.environ["CLM_SERVING__ONLINE_STORE"].removeprefix("sqlite:///"),
                        check_same_thread=False)
# The store's layout (features.online): numbers as one float64 block per customer, the rest JSON.
layout = json.loads(store.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()[0])
position = {name: i for i, name in enumerate(layout["numbers"])}
app = FastAPI()

@app.post("/score")
async def score(request: Request):
    body = await request.json()
    ids = [c["customer_id"] for c in body["customers"]]
    marks = ",".join("?" * len(ids))
    rows = {cid: (numbers, json.loads(other)) for cid, numbers, other in store.execute(
        f"SELECT customer_id, numbers, other FROM features WHERE customer_id IN ({marks})", ids)}
    numbers = np.frombuffer(b"".join(rows[i][0] for i in ids)).reshape(len(ids), -1)
    columns = {c: np.array([rows[i][1].get(c) for i in ids], dtype=object)
               if c in encoder.levels_ else numbers[:, position[c]]
               for c in encoder.input_columns_}
    p = churn.booster_.inplace_predict(encoder.transform(columns))
    return JSONResponse({"results": [{"customer_id": i, "churn": float(x)}
                                     for i, x in zip(ids, p)]})
"""


def deployment(customers: int) -> tuple[dict[str, str], list[str]]:
    folder = CACHE / f"serving-{customers}"
    data = folder / "data"
    env = {
        **os.environ,
        "CLM_TRAINING__TRACKING_URI": f"sqlite:///{folder.resolve()}/mlflow.db",
        "CLM_SERVING__ONLINE_STORE": f"sqlite:///{folder.resolve()}/online.db",
        "CLM_TRAINING__EXPERIMENT": "bench",
    }
    env.pop("CLM_API_TOKEN", None)
    if not (folder / "online.db").exists():
        shutil.rmtree(folder, ignore_errors=True)
        sample = synthetic.generate(customers, seed=2, start=date(2023, 1, 1), end=date(2026, 1, 1))
        synthetic.write(sample, data)
        for args in (("train", "all"), ("features", "materialize")):
            subprocess.run(
                [sys.executable, "-m", "clm", *args, "--data", str(data), "--as-of", AS_OF],
                check=True, env=env, capture_output=True,
            )  # fmt: skip
    import sqlite3

    path = env["CLM_SERVING__ONLINE_STORE"].removeprefix("sqlite:///")
    ids = [r[0] for r in sqlite3.connect(path).execute("SELECT customer_id FROM features")]
    return env, ids


def start(command: list[str], env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/", timeout=5)  # any answer: the server is up
            return process
        except httpx.TransportError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit(f"{command} did not start in 120 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def wrk(url: str, ids: list[str], batch: int, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        quoted = ",".join(json.dumps(i) for i in ids[:5000])
        script.write(LUA % (quoted, batch, 7))
    result = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "-s", script.name, url],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    Path(script.name).unlink()
    text = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": rate,
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", text).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", text).group(1)),  # type: ignore[union-attr]
        "customers_per_s": rate * batch,
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


LEVELS = (("by id, concurrency 1", 1, 1), ("by id, concurrency 8", 1, 8),
          ("by id, concurrency 32", 1, 32), ("100 per request, concurrency 8", 100, 8))  # fmt: skip


def measure(
    servers: dict[str, tuple[list[str], dict[str, str]]], ids: list[str], seconds: int, rounds: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Every server's figures at every level: the median over ``rounds`` rounds of
    ``seconds / rounds`` each. All servers are up together (idle but one) and take turns
    within each round, so a slow spell of this machine hits them alike."""
    processes, urls = [], {}
    try:
        for name, (command, env) in servers.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            processes.append(start([*command, "--port", str(port)], env, urls[name]))
            if "serve" in command:  # ready once one worker is: wait for the others
                workers = (
                    int(command[command.index("--workers") + 1])
                    if "--workers" in command
                    else usable_cores()
                )
                wait_for_workers(urls[name], workers)
            wrk(urls[name], ids, 1, 8, 3)  # warm-up
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {label: [] for label, *_ in LEVELS} for name in servers
        }
        each = max(1, round(seconds / rounds))
        for _ in range(rounds):
            for label, batch, c in LEVELS:
                for name, url in urls.items():
                    runs[name][label].append(wrk(url, ids, batch, c, each))
    finally:
        for process in processes:
            stop(process)
    failed = {
        (name, label): int(sum(f["errors"] for f in fs))
        for name, levels in runs.items()
        for label, fs in levels.items()
        if any(f["errors"] for f in fs)
    }
    if failed:  # figures of failing requests mean nothing
        raise SystemExit(f"non-2xx responses: {failed}")
    return {
        name: {
            label: {key: statistics.median(f[key] for f in fs) for key in fs[0]}
            for label, fs in levels.items()
        }
        for name, levels in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=20, help="per level and server")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run make bench-serving (apt-get install wrk)")
    started = time.perf_counter()
    env, ids = deployment(args.customers)
    print(f"deployment: {args.customers:,} people, {len(ids):,} in the store "
          f"({time.perf_counter() - started:.0f} s to prepare)")  # fmt: skip
    serve = [sys.executable, "-m", "clm", "serve"]
    one = [*serve, "--workers", "1"]
    approx_env = {**env, "CLM_SERVING__CONTRIBUTIONS": "approx"}
    cores = usable_cores()
    default = f"clm serve ({cores} workers)" if cores > 1 else "clm serve (1 worker)"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bare_app.py").write_text(BASELINE)
        bare = [sys.executable, "-m", "uvicorn", "--app-dir", tmp, "--log-level", "warning",
                "--no-access-log", "bare_app:app"]  # fmt: skip
        servers = {"bare FastAPI": (bare, env), default: (serve, env),
                   "clm serve, 1 worker": (one, env),
                   "clm serve, 1, approx": (one, approx_env)}  # fmt: skip
        if cores == 1:  # the default is the one-worker server
            del servers["clm serve, 1 worker"]
        figures = measure(servers, ids, args.seconds, args.rounds)
    baseline = figures["bare FastAPI"]
    print(f"each figure: the median of {args.rounds} rounds of {args.seconds / args.rounds:.0f} s, "
          f"the servers taking turns")  # fmt: skip
    print(f"{'level':<34}{'server':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'cust/s':>10}{'errors':>8}")  # fmt: skip
    for label, *_ in LEVELS:
        for name, server in figures.items():
            f = server[label]
            print(f"{label:<34}{name:<22}{f['rps']:>9.0f}{f['p50']:>9.2f}{f['p99']:>9.2f}"
                  f"{f['customers_per_s']:>10.0f}{f['errors']:>8.0f}")  # fmt: skip
    bare_saturated = max(baseline[label]["rps"] for label, b, _ in LEVELS if b == 1)
    for name in (n for n in figures if n.startswith("clm serve") and "approx" not in n):
        server = figures[name]
        single = server["by id, concurrency 1"]
        saturated = max(server[label]["rps"] for label, b, _ in LEVELS if b == 1)
        batch = server["100 per request, concurrency 8"]["customers_per_s"]
        role = "the default, one per core: the targets" if name == default else "for comparison"
        print(f"{name} ({role}):")
        print(f"  concurrency 1: p50 {single['p50']:.2f} ms (target < 2), p99 "
              f"{single['p99']:.2f} ms (target < 10)")  # fmt: skip
        print(f"  saturated throughput: {saturated:.0f} req/s = {saturated / bare_saturated:.0%} "
              f"of the bare app's {bare_saturated:.0f} (one process; target >= 60%)")  # fmt: skip
        print(f"  100-customer requests: {batch:.0f} customers/s (target >= 20,000)")
    approx = figures["clm serve, 1, approx"]
    quick = approx["100 per request, concurrency 8"]["customers_per_s"]
    print(f"with approximate contributions (serving.contributions = approx), one worker: "
          f"concurrency 1 p50 {approx['by id, concurrency 1']['p50']:.2f} ms, 100-customer "
          f"requests {quick:.0f} customers/s")  # fmt: skip


if __name__ == "__main__":
    main()
