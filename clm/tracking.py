"""Where the MLflow store is, for training (writes) and serving (reads) alike.

The URI comes from settings (``training.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else
the local store: a SQLite database with an artifact folder beside it under ``mlflow/``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from clm.errors import ClmError
from clm.settings import TrainingSettings

__all__ = [
    "LOCAL_STORE", "MODEL_NAMES", "check_sqlite_store", "logged_metadata", "sqlite_path",
    "tracking_uri",
]  # fmt: skip

MODEL_NAMES = {"churn": "clm-churn", "stage": "clm-stage", "clv": "clm-clv"}
LOCAL_STORE = Path("mlflow")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None: decoded as SQLAlchemy (so
    MLflow) decodes it (``my%20dir`` is ``my dir``; a ``?timeout=20`` query is no part)."""
    if not uri.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url  # MLflow's own dependency

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


def check_sqlite_store(database: Path, *, create: bool) -> None:
    """One clear line, at once, for a SQLite store that cannot be opened (MLflow retries for
    about two minutes, then prints SQLAlchemy's error). ``create``: a command that writes
    (clm train) may create it; the others need it to exist and never create an empty one."""
    if not create and not database.is_file():
        raise ClmError(f"no MLflow store at {database}: run clm train first")
    try:
        if create:
            database.parent.mkdir(parents=True, exist_ok=True)
            # SQLite would open a write-protected file read-only, and the first write fail.
            target = database if database.exists() else database.parent
            if not os.access(target, os.W_OK):
                raise OSError(f"{target} is not writable")
        mode = "rwc" if create else "ro"
        con = sqlite3.connect(f"file:{quote(str(database))}?mode={mode}", uri=True)
        try:
            con.execute("PRAGMA schema_version").fetchone()
        finally:
            con.close()
    except (OSError, sqlite3.Error) as error:
        raise ClmError(
            f"cannot open the MLflow store {database} ({error}); check training.tracking_uri "
            "or MLFLOW_TRACKING_URI"
        ) from None


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


def logged_metadata(name: str, version: str) -> dict[str, Any]:
    """A registered version's MLmodel metadata (the feature settings and cutoff clm records),
    read without loading the model; empty for a model logged before clm recorded any."""
    import mlflow  # slow to import: only where a registry is read

    return dict(mlflow.models.get_model_info(f"models:/{name}/{version}").metadata or {})
