"""The README's walkthrough, run as written.

Every ```bash block preceded by ``<!-- runnable -->`` runs in order with bash (``-e``), from
the root of a copy of the repository (tracked files, modification times kept, the same
``.venv``), with ``.venv/bin`` first on the PATH as ``source .venv/bin/activate`` puts it and
none of the test suite's ``CLM_*`` / ``MLFLOW_*`` variables. A block marked
``<!-- runnable: background, ready at URL -->`` is a server: it is started, waited for until
URL answers, and stopped at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"<!-- runnable(?::\s*background, ready at (?P<url>\S+))?\s*-->\s*\n```bash\n(?P<body>.*?)```",
    re.S,
)


@dataclass(frozen=True)
class Block:
    body: str
    ready_url: str | None  # a background server when set


def blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    return [Block(m["body"], m["url"]) for m in BLOCK.finditer(text)]


def test_the_walkthrough_covers_the_product() -> None:
    found = blocks()
    assert len(found) == 8
    text = "\n".join(b.body for b in found)
    for command in ("make demo", "clm report", "--column", "clm train all", "mlflow ui",
                    "clm serve", "Authorization: Bearer", "clm score", "--engine spark"):  # fmt: skip
        assert command in text, command
    # Every marker is followed by a bash block (a typo in a marker would skip a block silently).
    assert (ROOT / "README.md").read_text().count("\n<!-- runnable") == len(found)


def _copy_repository(target: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    for shared in (".venv", ".cache"):
        if (ROOT / shared).exists():
            (target / shared).symlink_to(ROOT / shared)


def _port_free(url: str) -> bool:
    address = urlparse(url)
    with socket.socket() as s:
        return s.connect_ex((address.hostname or "127.0.0.1", address.port or 80)) != 0


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"background block exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_walkthrough_runs_as_written(tmp_path: Path) -> None:
    stamp = ROOT / ".venv" / ".installed"
    if not stamp.exists() or any(
        (ROOT / f).stat().st_mtime > stamp.stat().st_mtime
        for f in ("pyproject.toml", "constraints.txt")
    ):
        pytest.fail("the environment is older than pyproject.toml: run make install first")
    repo = tmp_path / "clm"
    _copy_repository(repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLM_", "MLFLOW_"))}
    env["PATH"] = f"{repo / '.venv' / 'bin'}:{env['PATH']}"
    env["VIRTUAL_ENV"] = str(repo / ".venv")
    servers: list[subprocess.Popen[bytes]] = []
    outputs: list[str] = []
    try:
        for i, block in enumerate(blocks()):
            log = tmp_path / f"block-{i}.log"
            if block.ready_url:
                assert _port_free(block.ready_url), f"{block.ready_url} is taken: stop what uses it"
                with log.open("wb") as out:
                    servers.append(
                        subprocess.Popen(
                            ["bash", "-c", block.body],
                            cwd=repo,
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
                _wait(block.ready_url, servers[-1], log)
                outputs.append("")
                continue
            result = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block.body],
                cwd=repo, env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            assert result.returncode == 0, (
                f"block {i}:\n{block.body}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
            outputs.append(result.stdout + result.stderr)
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    # What each step should have left behind or printed.
    assert "clm-churn" in outputs[0] and "champion" in outputs[0]
    assert "Customer lifecycle report" in (repo / "data" / "report.html").read_text()
    shop = pd.read_csv(repo / "data" / "shop-features.csv")
    assert sorted(shop["customer_id"]) == ["A1", "B7"]
    assert "refused, as it should be" in outputs[2] and "warning:" not in outputs[2]
    assert "column 'order_date' (mapped to timestamp)" in outputs[2] and "'yesterday'" in outputs[2]
    # Two JSON bodies back to back (curl adds no newline), then the status of the call
    # without the token.
    decoder = json.JSONDecoder()
    text = outputs[6].strip()
    scored, end = decoder.raw_decode(text)
    customer, end = decoder.raw_decode(text, end)
    assert [r["customer_id"] for r in scored["results"]] == ["C000007", "new-1"]
    assert [r["known"] for r in scored["results"]] == [True, False]
    assert customer["customer_id"] == "C000007"
    assert text[end:].strip() == "401"
    campaign = pd.read_csv(repo / "data" / "campaign-scores.csv")
    assert campaign["customer_id"].tolist() == ["C000002", "C000009", "C000011", "new-1"]
    assert set(campaign["segment"]) == {"spring"}
    assert campaign["known"].tolist() == [True, True, True, False]
    assert (campaign["action"] != "none").sum() <= 2
    spark = pd.read_parquet(repo / "data" / "scores-spark.parquet")
    local = pd.read_parquet(repo / "data" / "sample-scores.parquet")
    assert len(spark) == len(local)
