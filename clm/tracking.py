"""Where the MLflow store is, for training (writes) and serving (reads) alike.

The URI comes from settings (``training.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else
the local store: a SQLite database with an artifact folder beside it under ``mlflow/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from clm.settings import TrainingSettings

__all__ = ["LOCAL_STORE", "MODEL_NAMES", "tracking_uri"]

MODEL_NAMES = {"churn": "clm-churn", "stage": "clm-stage", "clv": "clm-clv"}
LOCAL_STORE = Path("mlflow")


def tracking_uri(settings: TrainingSettings) -> tuple[str, str | None]:
    """The tracking URI and, for the local store, the artifact location of new experiments."""
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    database = (LOCAL_STORE / "mlflow.db").resolve()
    return f"sqlite:///{database}", (LOCAL_STORE / "artifacts").resolve().as_uri()
