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


def tracking_uri(settings: TrainingSettings) -> tuple[str, str | None]:
    """The tracking URI and, for a SQLite store, the artifact location of new experiments:
    an ``artifacts`` folder beside the database (MLflow's own default is ``./mlruns`` under
    whatever the working directory happens to be)."""
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{(LOCAL_STORE / 'mlflow.db').resolve()}"
    database = sqlite_path(uri)
    if database is None:
        return uri, None
    return uri, (database.parent / "artifacts").resolve().as_uri()
