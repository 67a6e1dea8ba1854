"""The online store: round trip, unknown ids, atomic replacement under a reader, errors."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.errors import ClmError, ConfigError
from features.online import RedisStore, SqliteStore, open_store

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


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind: a SQLite file, or a key prefix on the test Redis server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/online.db"
    redis_url = request.getfixturevalue("redis_url")
    return f"{redis_url}?prefix=t{abs(hash(str(tmp_path)))}"


def test_round_trip_keeps_values_and_missing_as_none(url: str) -> None:
    store = open_store(url)
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
    assert isinstance(open_store("redis://127.0.0.1:1/0?prefix=p"), RedisStore)
    with pytest.raises(ConfigError, match=r"serving\.online_store 'memcached://x'"):
        open_store("memcached://x")


def test_sqlite_store_in_a_folder_whose_name_needs_quoting_in_a_uri(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a b#c?d%20" / "online.db")
    store.write(frame(2, 3), NEW)
    assert store.get_many(["C1"])["C1"]["purchase_days"] == 3


def test_reader_sees_whole_snapshots_while_a_writer_replaces_them(url: str, tmp_path: Path) -> None:
    writer, reader = open_store(url), open_store(url)
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


def test_redis_store_errors_name_the_server(redis_url: str) -> None:
    empty = open_store(f"{redis_url}?prefix=nothing-here")
    with pytest.raises(
        ClmError, match=r"prefix nothing-here\) is empty: run clm features materialize"
    ):
        empty.meta()
    with pytest.raises(ClmError, match="is empty"):
        empty.get_many(["C1"])
    down = open_store("redis://127.0.0.1:1/0")
    with pytest.raises(ClmError, match=r"online store redis://127.0.0.1:1/0: .*"):
        down.meta()


def test_redis_store_unlinks_the_old_generation(redis_url: str) -> None:
    import redis

    store = open_store(f"{redis_url}?prefix=gen")
    for generation in range(3):
        store.write(frame(10, generation), NEW)
    keys = sorted(k.decode() for k in redis.Redis.from_url(redis_url).keys("gen:*"))
    assert len(keys) == 3  # the pointer and one generation's features and meta
    assert store.get_many(["C3"])["C3"]["purchase_days"] == 2


def test_sqlite_vectors_give_back_each_kind_of_value(tmp_path: Path) -> None:
    snapshot = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "count": np.array([3, 0], dtype=np.int64),
            "maybe_count": pd.array([None, 4], dtype="Int64"),
            "flag": [True, False],
            "ratio": [0.25, np.inf],  # not finite: missing, as JSON stores had it
            "signup": [pd.Timestamp("2024-02-03"), pd.NaT],
            "region": ["north", None],
        }
    )
    store = SqliteStore(tmp_path / "online.db")
    store.write(snapshot, NEW)
    got = store.get_many(["B", "A"])
    a, b = got["A"], got["B"]
    assert a == {"count": 3, "maybe_count": None, "flag": True, "ratio": 0.25,
                 "signup": "2024-02-03T00:00:00", "region": "north"}  # fmt: skip
    assert b == {"count": 0, "maybe_count": 4, "flag": False, "ratio": None, "signup": None,
                 "region": None}  # fmt: skip
    assert type(a["count"]) is int and type(a["flag"]) is bool and type(a["ratio"]) is float
    assert a.get("nothing", "default") == "default" and "nothing" not in a
    with pytest.raises(KeyError):
        a["nothing"]
    assert len(a) == 6 and list(a)[:4] == ["count", "maybe_count", "flag", "ratio"]


def test_a_store_written_before_the_numeric_layout_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE features (customer_id TEXT PRIMARY KEY, vector TEXT NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    con.execute("INSERT INTO features VALUES ('C1', ?)", (json.dumps({"purchase_days": 2}),))
    con.execute("INSERT INTO meta VALUES ('new_customer', ?)", (json.dumps(NEW),))
    con.commit()
    con.close()
    store = SqliteStore(path)
    assert store.get_many(["C1", "C2"]) == {"C1": {"purchase_days": 2}}
    assert store.meta()["new_customer"] == NEW


def test_a_store_overwritten_in_place_is_a_clear_error_and_read_again_once_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "online.db"
    store = SqliteStore(path)
    store.write(frame(300, 1), NEW)
    assert store.get_many(["C5"])["C5"]["purchase_days"] == 1
    other = SqliteStore(tmp_path / "next.db")
    other.write(frame(300, 2), NEW)
    inode = path.stat().st_ino
    # cp over the open file: the same inode, other bytes (first half written, then garbage).
    whole = (tmp_path / "next.db").read_bytes()
    with path.open("r+b") as handle:
        handle.write(b"\0" * len(whole))
    assert path.stat().st_ino == inode
    with pytest.raises(ClmError, match=r"cannot be read .*; replace it whole, as clm features"):
        store.get_many(["C5"])
    with path.open("r+b") as handle:  # the copy completes
        handle.write(whole)
    assert store.get_many(["C5"])["C5"]["purchase_days"] == 2
    # A copy that completes between two lookups (no failed read in between) is read too.
    third = SqliteStore(tmp_path / "third.db")
    third.write(frame(400, 3).assign(extra=7.0), NEW)
    with path.open("r+b") as handle:
        handle.write((tmp_path / "third.db").read_bytes())
    assert path.stat().st_ino == inode
    got = store.get_many(["C5"])["C5"]
    assert got["purchase_days"] == 3 and got["extra"] == 7.0


def test_a_store_materialized_anew_under_other_settings_is_refused_to_its_reader(
    url: str,
) -> None:
    import os

    from features.online import StoreMismatch

    trained = {"stages.churn_inactivity_days": 180, "features.support_event_types": ["ticket"]}
    writer, reader = open_store(url), open_store(url)
    writer.write(frame(3, 1), NEW, trained)
    reader.expected_meaning = trained
    assert reader.get_many(["C1"])["C1"]["purchase_days"] == 1
    # Materialized again under other stage rules while the reader runs (a service): refused,
    # at every lookup, naming the setting and both values.
    writer.write(frame(3, 2), NEW, {**trained, "stages.churn_inactivity_days": 90})
    if isinstance(writer, SqliteStore):  # a new file within the old one's mtime tick
        os.utime(writer.path, ns=(1, 1))
    for _ in range(2):
        with pytest.raises(StoreMismatch) as refused:
            reader.get_many(["C1"])
        assert "stages.churn_inactivity_days = 180 (the store: 90)" in str(refused.value)
        assert "restart clm serve" in str(refused.value)
    # Materialized again with theirs (event types in another order): read.
    writer.write(frame(3, 3), NEW, {**trained, "features.support_event_types": ["ticket"] * 2})
    if isinstance(writer, SqliteStore):
        os.utime(writer.path, ns=(2, 2))
    assert reader.get_many(["C1"])["C1"]["purchase_days"] == 3
    # A reader that expects nothing (clm serve's own checks, a store of old models) reads all.
    writer.write(frame(3, 4), NEW, {"stages.churn_inactivity_days": 30})
    assert open_store(url).get_many(["C1"])["C1"]["purchase_days"] == 4
