"""The online feature store: the latest feature vector of every customer, for the service.

``clm features materialize`` writes a snapshot (features at ``as_of``) here; the service reads
one customer's vector per lookup. The embedded default is one SQLite file
(``serving.online_store = "sqlite:///PATH"``).

Writes are atomic: a new file is written beside the store and renamed over it, so a reader
sees either the old or the new snapshot, never a half-written customer. Readers notice the
rename (the file's inode changes) and reopen.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clm.errors import ClmError, ConfigError

__all__ = ["OnlineStore", "SqliteStore", "open_store"]

SCHEMA = """
CREATE TABLE features (customer_id TEXT PRIMARY KEY, vector TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
KEYS = ("customer_id", "as_of")
BATCH = 500  # ids per SELECT ... IN (...)


class OnlineStore:
    """What the service needs from a store (see :class:`SqliteStore`)."""

    def write(self, snapshot: pd.DataFrame, new_customer: dict[str, Any]) -> int:
        raise NotImplementedError

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        raise NotImplementedError


def open_store(url: str) -> OnlineStore:
    """The store named by ``serving.online_store``."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "sqlite":
        # As in SQLAlchemy URLs: sqlite:///relative/path, sqlite:////absolute/path.
        return SqliteStore(Path(rest.removeprefix("/")))
    raise ConfigError(
        f"serving.online_store {url!r}: expected sqlite:///PATH (relative) or sqlite:////PATH"
    )


def _plain(value: Any) -> Any:
    """A JSON-safe value: NaN and NA become null, numpy scalars Python ones."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class SqliteStore(OnlineStore):
    """One SQLite file: ``features(customer_id, vector JSON)`` and ``meta`` (as_of, columns)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def write(self, snapshot: pd.DataFrame, new_customer: dict[str, Any]) -> int:
        """Replace the store's contents with ``snapshot`` (one row per customer), atomically.

        ``new_customer`` is the feature row of a customer with no history, for unknown ids.
        """
        if "customer_id" not in snapshot.columns:
            raise ClmError("online store: the snapshot has no customer_id column")
        duplicated = snapshot["customer_id"].duplicated()
        if duplicated.any():
            first = snapshot.loc[duplicated, "customer_id"].iloc[0]
            raise ClmError(f"online store: customer_id {first!r} appears more than once")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        columns = [c for c in snapshot.columns if c not in KEYS and not c.startswith("label_")]
        as_of = snapshot["as_of"].max() if "as_of" in snapshot.columns else None
        try:
            with sqlite3.connect(partial) as con:
                con.executescript(SCHEMA)
                records = snapshot[columns].to_dict("records")
                ids = snapshot["customer_id"].astype(str).tolist()
                con.executemany(
                    "INSERT INTO features VALUES (?, ?)",
                    (
                        (cid, json.dumps({k: _plain(v) for k, v in row.items()}))
                        for cid, row in zip(ids, records, strict=True)
                    ),
                )
                meta = {
                    "as_of": _plain(as_of),
                    "columns": columns,
                    "customers": len(ids),
                    "new_customer": {k: _plain(v) for k, v in new_customer.items()},
                    "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                con.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in meta.items()],
                )
            con.close()
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)
        return len(snapshot)

    def _connection(self) -> sqlite3.Connection:
        """This thread's read-only connection, reopened when the file was replaced."""
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            raise ClmError(
                f"online store {self.path} does not exist: run clm features materialize"
            ) from None
        local = self._local
        if getattr(local, "inode", None) != inode:
            if getattr(local, "con", None) is not None:
                local.con.close()
            local.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            local.inode = inode
        con: sqlite3.Connection = local.con
        return con

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored vector of each known id (unknown ids are absent from the result)."""
        ids = list(dict.fromkeys(customer_ids))
        con = self._connection()
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            marks = ",".join("?" * len(chunk))
            rows = con.execute(
                f"SELECT customer_id, vector FROM features WHERE customer_id IN ({marks})", chunk
            )
            found.update((cid, json.loads(vector)) for cid, vector in rows)
        return found

    def meta(self) -> dict[str, Any]:
        rows = self._connection().execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}
