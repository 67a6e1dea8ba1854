from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

import pytest

from features import synthetic

# pytest runs two workers on two cores: one XGBoost thread each (oversubscribed OpenMP
# threads spin and slow everything down many times over).
os.environ.setdefault("CLM_TRAINING__N_JOBS", "1")
# Test services run one worker unless a test asks for more (the default is one per core).
os.environ.setdefault("CLM_SERVING__WORKERS", "1")
# A test that forgets its own store must not write into the repository's mlflow/ folder.
os.environ.setdefault(
    "MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='clm-mlflow-')}/mlflow.db"
)

SAMPLE_START, SAMPLE_END = date(2023, 1, 1), date(2026, 1, 1)


@pytest.fixture(scope="session")
def sample_data() -> synthetic.SyntheticData:
    """A small synthetic population (shared, read-only)."""
    return synthetic.generate(4000, seed=11, start=SAMPLE_START, end=SAMPLE_END)


@pytest.fixture(scope="session")
def sample_dir(
    sample_data: synthetic.SyntheticData, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    synthetic.write(sample_data, folder)
    return folder


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real redis-server on a free loopback port (make test installs Debian's redis-server)."""
    import shutil
    import subprocess
    import time

    import redis

    from serving.client import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: make test installs Debian's redis-server")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)
