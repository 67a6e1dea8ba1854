"""The online feature store: the latest feature vector of every customer, for the service.

``clm features materialize`` writes a snapshot (features at ``as_of``) here; the service reads
one customer's vector per lookup. The embedded default is one SQLite file
(``serving.online_store = "sqlite:///PATH"``); a Redis server is the shared alternative
(``redis://HOST:PORT/DB``, optionally ``?prefix=NAME`` for the key prefix, default ``clm``).

Writes are atomic. SQLite: a new file is written beside the store and renamed over it;
readers notice the rename (the file's inode changes) and reopen. Redis: a new generation of
keys is written, then one ``SET`` moves the ``PREFIX:current`` pointer to it and the old
generation is unlinked; a lookup reads the pointer and the vectors in one server-side script,
so it sees one generation whole. Either way a reader sees the old or the new snapshot, never
a half-written customer.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from clm.errors import ClmError, ConfigError
from clm.settings import meaning_changes

__all__ = [
    "Layout", "OnlineStore", "RedisStore", "SqliteStore", "StoreMismatch", "Vector", "open_store",
]  # fmt: skip

# A rowid table: a vector (about 1 KB) is larger than a WITHOUT ROWID table suits, whose
# lookups then cost 4 times as much (measured here: 100 ids in 1.1 ms against 0.3 ms).
# A customer's numbers are one float64 block (NaN for missing) in the order of the meta's
# "layout", the other values (text, dates) JSON: reading 100 vectors then takes no parsing,
# against 0.9 ms for 100 JSON objects of 120 numbers. Stores written before the layout, with
# one JSON object per customer in ``vector``, still read.
SCHEMA = """
CREATE TABLE features (customer_id TEXT PRIMARY KEY, numbers BLOB NOT NULL, other TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Readers map the file into memory (no read call per page).
MMAP_BYTES = 1 << 30
KEYS = ("customer_id", "as_of")
BATCH = 500  # ids per SELECT ... IN (...)


Meaning = dict[str, Any] | None


class StoreMismatch(ClmError):
    """A store whose features mean something else to the loaded champions."""


class OnlineStore:
    """What the service needs from a store (see :class:`SqliteStore`)."""

    # Whether a lookup may wait on the network; the service then runs it on a thread.
    remote = True
    # The feature settings the reader's models were trained with (the service sets them): a
    # store materialized anew under others is refused at lookup (see check_meaning).
    expected_meaning: dict[str, Any] | None = None

    def check_meaning(self, found: Meaning, where: str) -> None:
        """Refuse a store (a new file or generation) whose features were built under other
        settings than :attr:`expected_meaning`; called when a reader first sees it."""
        if self.expected_meaning is None or found is None:
            return
        changes = meaning_changes(self.expected_meaning, found, "the store:")
        if changes:
            raise StoreMismatch(
                f"online store {where}: materialized anew under other settings than the "
                f"champions this service loaded were trained with ({'; '.join(changes[:5])}); "
                "restart clm serve to load champions for it, or materialize with theirs"
            )

    def write(
        self, snapshot: pd.DataFrame, new_customer: dict[str, Any], meaning: Meaning = None
    ) -> int:
        """``meaning``: the settings the features were built with (clm.settings'
        ``feature_meaning``), kept in the meta as ``feature_settings`` for the service."""
        raise NotImplementedError

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        raise NotImplementedError


def shown_url(url: str) -> str:
    """A store URL as messages and logs show it: without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def open_store(url: str) -> OnlineStore:
    """The store named by ``serving.online_store``."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "sqlite":
        # As in SQLAlchemy URLs: sqlite:///relative/path, sqlite:////absolute/path.
        return SqliteStore(Path(rest.removeprefix("/")))
    if sep and scheme in ("redis", "rediss"):
        return RedisStore(url)
    raise ConfigError(
        f"serving.online_store {shown_url(url)!r}: expected sqlite:///PATH (relative), "
        "sqlite:////PATH or redis://HOST:PORT/DB"
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


def _checked(snapshot: pd.DataFrame) -> tuple[list[str], list[str], Any]:
    """Ids, feature columns and as_of of a snapshot; refuses missing or duplicated ids."""
    if "customer_id" not in snapshot.columns:
        raise ClmError("online store: the snapshot has no customer_id column")
    duplicated = snapshot["customer_id"].duplicated()
    if duplicated.any():
        first = snapshot.loc[duplicated, "customer_id"].iloc[0]
        raise ClmError(f"online store: customer_id {first!r} appears more than once")
    columns = [c for c in snapshot.columns if c not in KEYS and not c.startswith("label_")]
    as_of = snapshot["as_of"].max() if "as_of" in snapshot.columns else None
    return snapshot["customer_id"].astype(str).tolist(), columns, as_of


class Layout:
    """Where a store's vectors keep each feature: the numbers' positions in the float64 block
    and which of them are whole numbers or flags (given back as int and bool)."""

    def __init__(self, numbers: list[str], integers: list[str], flags: list[str]) -> None:
        self.numbers = numbers
        self.position = {name: i for i, name in enumerate(numbers)}
        self.integers, self.flags = frozenset(integers), frozenset(flags)

    def to_json(self) -> dict[str, list[str]]:
        return {
            "numbers": self.numbers,
            "integers": sorted(self.integers),
            "flags": sorted(self.flags),
        }

    @classmethod
    def of(cls, snapshot: pd.DataFrame, columns: list[str]) -> Layout:
        numbers = [
            c
            for c in columns
            if pd.api.types.is_numeric_dtype(snapshot[c]) or pd.api.types.is_bool_dtype(snapshot[c])
        ]
        flags = [c for c in numbers if pd.api.types.is_bool_dtype(snapshot[c])]
        integers = [c for c in numbers if pd.api.types.is_integer_dtype(snapshot[c])]
        return cls(numbers, integers, flags)


class Vector(Mapping[str, Any]):
    """One stored customer, read-only: its numbers as one float64 block (``numbers``, laid out
    by ``layout``) and its other values by name. Reads like the dict it was written from
    (missing numbers are None, whole numbers int, flags bool)."""

    __slots__ = ("_array", "layout", "numbers", "other")

    def __init__(self, layout: Layout, numbers: bytes, other: dict[str, Any]) -> None:
        self.layout, self.numbers, self.other = layout, numbers, other
        self._array: np.ndarray | None = None

    def __getitem__(self, name: str) -> Any:
        at = self.layout.position.get(name)
        if at is None:
            return self.other[name]
        if self._array is None:
            self._array = np.frombuffer(self.numbers, dtype=np.float64)
        value = float(self._array[at])
        if math.isnan(value):
            return None
        if name in self.layout.integers:
            return int(value)
        return bool(value) if name in self.layout.flags else value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        yield from self.layout.numbers
        yield from self.other

    def __len__(self) -> int:
        return len(self.layout.numbers) + len(self.other)

    def __repr__(self) -> str:
        return f"Vector({dict(self)!r})"


def _blocks(snapshot: pd.DataFrame, layout: Layout, columns: list[str]) -> Iterable[tuple]:
    """(numbers, other) per row: the float64 block (non-finite as NaN) and the JSON rest."""
    numbers = snapshot[layout.numbers].to_numpy(dtype=np.float64, na_value=np.nan)
    numbers[~np.isfinite(numbers)] = np.nan
    others = [c for c in columns if c not in layout.position]
    for block, row in zip(numbers, snapshot[others].to_dict("records"), strict=True):
        yield block.tobytes(), json.dumps({k: _plain(v) for k, v in row.items()})


def _vectors(snapshot: pd.DataFrame, columns: list[str]) -> Iterable[str]:
    for row in snapshot[columns].to_dict("records"):
        yield json.dumps({k: _plain(v) for k, v in row.items()})


def _meta(
    snapshot: pd.DataFrame, as_of: Any, columns: list[str], new_customer: dict[str, Any],
    meaning: Meaning,
) -> dict[str, Any]:  # fmt: skip
    """What a reader needs besides the vectors: the cutoff, the columns and their kinds
    (``whole_numbers``, ``flags``: for the service to check overrides), the new customer."""
    kinds = Layout.of(snapshot, columns)
    return {
        "as_of": _plain(as_of),
        "columns": columns,
        "customers": len(snapshot),
        "new_customer": {k: _plain(v) for k, v in new_customer.items()},
        "whole_numbers": sorted(kinds.integers),
        "flags": sorted(kinds.flags),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"feature_settings": meaning} if meaning is not None else {}),
    }


class SqliteStore(OnlineStore):
    """One SQLite file: ``features(customer_id, numbers, other)`` (see SCHEMA) and ``meta``
    (as_of, columns, layout)."""

    remote = False  # a local file: a lookup takes microseconds

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def write(
        self, snapshot: pd.DataFrame, new_customer: dict[str, Any], meaning: Meaning = None
    ) -> int:
        """Replace the store's contents with ``snapshot`` (one row per customer), atomically.

        ``new_customer`` is the feature row of a customer with no history, for unknown ids.
        """
        ids, columns, as_of = _checked(snapshot)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        try:
            with sqlite3.connect(partial) as con:
                con.executescript(SCHEMA)
                layout = Layout.of(snapshot, columns)
                con.executemany(
                    "INSERT INTO features VALUES (?, ?, ?)",
                    (
                        (cid, *block)
                        for cid, block in zip(ids, _blocks(snapshot, layout, columns), strict=True)
                    ),
                )
                meta = _meta(snapshot, as_of, columns, new_customer, meaning)
                meta["layout"] = layout.to_json()
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
        """This thread's read-only connection, reopened when the file was replaced.

        A store file is never changed once in place (:meth:`write` replaces it whole), so it
        is opened ``immutable``: no locks, and pages are read from a memory map.
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise ClmError(
                f"online store {self.path} does not exist: run clm features materialize"
            ) from None
        # A file copied over in place (cp, rsync --inplace) keeps its inode: its size and
        # modification time tell it apart, and it is opened again.
        inode = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        local = self._local
        if getattr(local, "inode", None) != inode:
            if getattr(local, "con", None) is not None:
                local.con.close()
            uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
            opened = sqlite3.connect(uri, uri=True)
            opened.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            try:
                kept = dict(
                    opened.execute(
                        "SELECT key, value FROM meta WHERE key IN ('layout', 'feature_settings')"
                    ).fetchall()
                )
            except sqlite3.DatabaseError:  # not a store (the lookup names it)
                kept = {}
            if "feature_settings" in kept:
                try:
                    self.check_meaning(json.loads(kept["feature_settings"]), str(self.path))
                except StoreMismatch:
                    opened.close()  # not kept: every lookup checks again, until a restart
                    raise
            local.layout = Layout(**json.loads(kept["layout"])) if "layout" in kept else None
            local.con, local.inode = opened, inode
        con: sqlite3.Connection = local.con
        return con

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        """The stored vector of each known id (unknown ids are absent from the result): a
        :class:`Vector`, or a dict from a store written before the layout."""
        ids = list(dict.fromkeys(customer_ids))
        try:
            return self._get_many(ids)
        except sqlite3.DatabaseError as error:
            # A file copied over the store in place (cp, rsync --inplace) is read half
            # written through the open memory map: reopen on the next lookup, and say why.
            self._local.inode = None
            raise ClmError(
                f"online store {self.path} cannot be read ({error}); replace it whole, as "
                "clm features materialize does (a new file renamed over it), never in place"
            ) from error

    def _get_many(self, ids: list[str]) -> dict[str, Mapping[str, Any]]:
        con = self._connection()
        layout: Layout | None = self._local.layout
        found: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            marks = ",".join("?" * len(chunk))
            if layout is None:
                rows = con.execute(
                    f"SELECT customer_id, vector FROM features WHERE customer_id IN ({marks})",
                    chunk,
                )
                found.update((cid, orjson.loads(vector)) for cid, vector in rows)
                continue
            rows = con.execute(
                f"SELECT customer_id, numbers, other FROM features WHERE customer_id IN ({marks})",
                chunk,
            )
            found.update(
                (cid, Vector(layout, numbers, orjson.loads(other))) for cid, numbers, other in rows
            )
        return found

    def meta(self) -> dict[str, Any]:
        rows = self._connection().execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}


# One round trip, one generation: the pointer and the vectors are read together on the server.
_LOOKUP = """
local generation = redis.call('GET', KEYS[1])
if not generation then return false end
if ARGV[1] ~= '' and ARGV[1] ~= generation then return {generation} end
return {generation, redis.call('HMGET', KEYS[2] .. generation .. ':features', unpack(ARGV, 2))}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore(OnlineStore):
    """A Redis server: ``PREFIX:GEN:features`` (hash customer_id -> JSON vector),
    ``PREFIX:GEN:meta`` and the pointer ``PREFIX:current`` to the live generation."""

    CHUNK = 2000  # ids per lookup script call

    def __init__(self, url: str) -> None:
        from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

        import redis

        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.prefix = query.pop("prefix", ["clm"])[0]
        url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        self.url = shown_url(url)  # in messages: never the password
        self._redis = redis.Redis.from_url(url, socket_timeout=10)
        self._checked = ""  # the last generation whose feature settings were checked
        self._lookup = self._redis.register_script(_LOOKUP)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)

    def _call(self, action: Any) -> Any:
        try:
            return action()
        except self._errors as exc:
            raise ClmError(f"online store {self.url}: {exc}") from exc

    def write(
        self, snapshot: pd.DataFrame, new_customer: dict[str, Any], meaning: Meaning = None
    ) -> int:
        """Write a new generation, then move the pointer to it and unlink the old one."""
        ids, columns, as_of = _checked(snapshot)
        generation = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}-{os.urandom(4).hex()}"
        base = f"{self.prefix}:{generation}"
        meta = _meta(snapshot, as_of, columns, new_customer, meaning)

        def write_generation() -> None:
            pipe = self._redis.pipeline(transaction=False)
            vectors = _vectors(snapshot, columns)
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                pipe.hset(f"{base}:features", mapping=dict(zip(chunk, vectors, strict=False)))
                pipe.execute()
            pipe.hset(f"{base}:meta", mapping={k: json.dumps(v) for k, v in meta.items()})
            pipe.execute()

        try:
            self._call(write_generation)
            old = self._call(
                lambda: self._redis.set(f"{self.prefix}:current", generation, get=True)
            )
        except BaseException:
            self._redis.unlink(f"{base}:features", f"{base}:meta")
            raise
        if old:
            gone = f"{self.prefix}:{_text(old)}"
            self._call(lambda: self._redis.unlink(f"{gone}:features", f"{gone}:meta"))
        return len(ids)

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        """The stored vector of each known id, all from one generation."""
        ids = list(dict.fromkeys(customer_ids))
        if not ids:
            return {}
        keys = [f"{self.prefix}:current", f"{self.prefix}:"]
        for _attempt in range(5):
            found: dict[str, Mapping[str, Any]] = {}
            generation = ""
            for start in range(0, max(len(ids), 1), self.CHUNK):
                chunk = ids[start : start + self.CHUNK]
                answer = self._call(lambda c=chunk, g=generation: self._lookup(keys, [g, *c]))
                if not answer:
                    raise ClmError(
                        f"online store {self.url} (prefix {self.prefix}) is empty: "
                        "run clm features materialize"
                    )
                if len(answer) == 1:  # the pointer moved between two chunks: start again
                    break
                generation = _text(answer[0])
                if generation != self._checked:
                    self._check_generation(generation)
                found.update(
                    (cid, orjson.loads(vector))
                    for cid, vector in zip(chunk, answer[1], strict=True)
                    if vector is not None
                )
            else:
                return found
        raise ClmError(f"online store {self.url}: the store kept changing during a lookup")

    def _check_generation(self, generation: str) -> None:
        """A generation seen for the first time: its feature settings, if any are expected."""
        if self.expected_meaning is not None:
            raw = self._call(
                lambda: self._redis.hget(f"{self.prefix}:{generation}:meta", "feature_settings")
            )
            found = json.loads(raw) if raw is not None else None
            self.check_meaning(found, f"{self.url} (prefix {self.prefix})")
        self._checked = generation

    def meta(self) -> dict[str, Any]:
        def read() -> dict[str, Any] | None:
            generation = self._redis.get(f"{self.prefix}:current")
            if generation is None:
                return None
            raw = self._redis.hgetall(f"{self.prefix}:{_text(generation)}:meta")
            return {_text(k): json.loads(v) for k, v in raw.items()}

        meta = self._call(read)
        if not meta:
            raise ClmError(
                f"online store {self.url} (prefix {self.prefix}) is empty: "
                "run clm features materialize"
            )
        return meta
