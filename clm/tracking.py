"""Where the MLflow store is, for training (writes) and serving (reads) alike.

The URI comes from settings (``training.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else
the local store: a SQLite database with an artifact folder beside it under ``mlflow/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from clm.settings import TrainingSettings

__all__ = ["LOCAL_STORE", "MODEL_NAMES", "sqlite_path", "tracking_uri"]

MODEL_NAMES = {"churn": "clm-churn", "stage": "clm-stage", "clv": "clm-clv"}
LOCAL_STORE = Path("mlflow")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def _fail_fast_on_a_server_that_is_down() -> None:
    """MLflow retries a request to a tracking server 7 times with a doubling back-off: a
    server that is down (or a mistyped port) made a command wait over 4 minutes before its
    error. Two retries, 1 s then 2 s apart, ride out a restart and fail in seconds; either
    variable set in the environment wins."""
    for name, value in HTTP_RETRIES.items():
        os.environ.setdefault(name, value)


def tracking_uri(settings: TrainingSettings) -> tuple[str, str | None]:
    """The tracking URI and, for a SQLite store, the artifact location of new experiments:
    an ``artifacts`` folder beside the database (MLflow's own default is ``./mlruns`` under
    whatever the working directory happens to be)."""
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{(LOCAL_STORE / 'mlflow.db').resolve()}"
    database = sqlite_path(uri)
    if database is None:
        if uri.startswith(("http://", "https://")):
            _fail_fast_on_a_server_that_is_down()
        return uri, None
    return uri, (database.parent / "artifacts").resolve().as_uri()
