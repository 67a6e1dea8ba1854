"""The online store: round trip, unknown ids, atomic replacement under a reader, errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.errors import ClmError, ConfigError
from features.online import SqliteStore, open_store

NEW = {"stage": "awareness", "purchase_days": 0, "days_since_last_purchase": None}


def frame(n: int, generation: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "as_of": pd.Timestamp("2025-07-01").date(),
            "stage": ["retention"] * n,
            "purchase_days": np.full(n, generation, dtype=np.int64),
            "days_since_last_purchase": [np.nan] + [float(generation)] * (n - 1),
            "label_churned": 1,  # labels never go to the store
        }
    )


def test_round_trip_keeps_values_and_missing_as_none(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/online.db")
    assert store.write(frame(3, 7), NEW) == 3
    got = store.get_many(["C1", "C0", "nobody"])
    assert set(got) == {"C0", "C1"}  # unknown ids are simply absent
    assert got["C1"] == {"stage": "retention", "purchase_days": 7, "days_since_last_purchase": 7.0}
    assert got["C0"]["days_since_last_purchase"] is None
    meta = store.meta()
    assert meta["as_of"] == "2025-07-01" and meta["customers"] == 3
    assert meta["new_customer"] == NEW
    assert "label_churned" not in meta["columns"]


def test_relative_and_absolute_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///stores/online.db")
    assert isinstance(relative, SqliteStore) and relative.path == Path("stores/online.db")
    absolute = open_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(absolute, SqliteStore) and absolute.path == tmp_path / "x.db"
    with pytest.raises(ConfigError, match=r"serving\.online_store 'redis://x'"):
        open_store("redis://x")


def test_reader_sees_whole_snapshots_while_a_writer_replaces_them(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    writer, reader = SqliteStore(path), SqliteStore(path)
    writer.write(frame(2000, 0), NEW)
    seen: set[int] = set()
    problems: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            rows = reader.get_many([f"C{i}" for i in range(0, 2000, 97)])
            generations = {row["purchase_days"] for row in rows.values()}
            if len(rows) != 21 or len(generations) != 1:  # half-written, or two snapshots
                problems.append(f"{len(rows)} rows, generations {generations}")
            seen.update(generations)

    thread = threading.Thread(target=read)
    thread.start()
    for generation in range(1, 6):
        writer.write(frame(2000, generation), NEW)
    stop.set()
    thread.join()
    assert problems == [] and seen
    assert reader.get_many(["C5"])["C5"]["purchase_days"] == 5  # the reader reopened
    assert not list(tmp_path.glob(".*partial"))


def test_missing_store_and_duplicate_ids_are_clear_errors(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "none.db")
    with pytest.raises(ClmError, match="does not exist: run clm features materialize"):
        store.get_many(["C1"])
    twice = pd.concat([frame(2, 1), frame(1, 1)])
    with pytest.raises(ClmError, match="customer_id 'C0' appears more than once"):
        store.write(twice, NEW)
    assert not (tmp_path / "none.db").exists()
