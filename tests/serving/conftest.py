"""A real scoring service on 127.0.0.1: champions trained on sample data, a materialized store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from features import synthetic
from serving.client import local_service

AS_OF = "2025-07-01"
TOKEN = "test-token-123"


@dataclass(frozen=True)
class Deployment:
    data: Path
    env: dict[str, str]  # CLM_* and MLflow variables of the store and online store
    trained: subprocess.CompletedProcess[str]  # what clm train all printed


def _clm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clm", *args], check=True, env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """Sample data (3,000 people), ``clm train all`` and ``clm features materialize``."""
    root = tmp_path_factory.mktemp("deployment")
    data = root / "data"
    synthetic.write(
        synthetic.generate(3000, seed=3, start=date(2023, 1, 1), end=date(2026, 1, 1)), data
    )
    env = {
        **os.environ,
        "CLM_TRAINING__TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "CLM_SERVING__ONLINE_STORE": f"sqlite:///{root}/online.db",
    }
    trained = _clm("train", "all", "--data", str(data), "--as-of", AS_OF, env=env)
    _clm("features", "materialize", "--data", str(data), "--as-of", AS_OF, env=env)
    return Deployment(data, env, trained)


CORS_ORIGIN = "https://crm.example.com"


@pytest.fixture(scope="session")
def server(deployment: Deployment) -> Iterator[str]:
    """``clm serve`` with an API token, on a free port; yields its base URL."""
    log = deployment.data.parent / "serve.log"
    try:
        # Browser pages of one origin may call it (tests/serving/test_service.py checks CORS).
        env = {**deployment.env, "CLM_SERVING__CORS_ORIGINS": f'["{CORS_ORIGIN}"]'}
        with local_service(token=TOKEN, env=env, log=log) as client:
            yield client.url
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def everyone(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``clm score`` (local engine) of every known customer, as a DataFrame."""
    import pandas as pd

    from clm.settings import ClmSettings
    from serving.batch import BatchRequest, score_batch

    out = tmp_path_factory.mktemp("batch") / "all.parquet"
    settings = ClmSettings(training={"tracking_uri": deployment.env["CLM_TRAINING__TRACKING_URI"]})  # type: ignore[arg-type]
    score_batch(BatchRequest(data=deployment.data, as_of=date(2025, 7, 1), out=out), settings)
    return pd.read_parquet(out)
