"""RFM segments: the classic R x F grid marketing teams act on (champions, at risk, lost, ...).

R and F are scores 1-5 by quintile among the buyers at the cutoff (R from the days since the
last purchase, fewer is better; F from purchase days, more is better). Ties share the lowest
score of their group, so when most buyers bought once they all score F 1 (not an average
that makes them look loyal). :class:`RfmScale` keeps the buyers' sorted values, so that one
customer, or a chunk of a list, is scored against the whole population as the report scores
everyone at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
from numpy.typing import ArrayLike, NDArray

from features.rollups import ensure_rollups
from features.sql import date_literal

__all__ = ["SEGMENTS", "RfmScale", "scale_at"]

# R and F scores -> segment; the first match wins; a buyer matching none is "other".
GRID: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("champions", (5,), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("potential loyalists", (4, 5), (2, 3)),
    ("new", (5,), (1,)),
    ("promising", (4,), (1,)),
    ("need attention", (3,), (3,)),
    ("about to sleep", (3,), (1, 2)),
    ("can't lose", (1, 2), (5,)),
    ("at risk", (1, 2), (3, 4)),
    ("hibernating", (2,), (1, 2)),
    ("lost", (1,), (1, 2)),
)
SEGMENTS = tuple(name for name, _, _ in GRID)


def _score(rank_min: NDArray[np.float64], count: int) -> NDArray[np.int64]:
    """1-5 from a 1-based rank (ties at the lowest), as pandas' rank(pct=True) then ceil."""
    return np.clip(np.ceil(rank_min / count * 5), 1, 5).astype(np.int64)


def _counted(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The distinct values, sorted, and how many values lie below each (and below none:
    the total, last): a few hundred numbers however many buyers there are."""
    distinct, counts = np.unique(values, return_counts=True)
    return distinct, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass(frozen=True)
class RfmScale:
    """The buyers' recency (days since the last purchase) and frequency (purchase days) at
    one cutoff, as distinct values with cumulative counts: what each customer's R and F
    scores are ranked against (small enough to ship to every Spark task)."""

    recency: NDArray[np.float64]
    recency_below: NDArray[np.int64]
    frequency: NDArray[np.float64]
    frequency_below: NDArray[np.int64]

    @classmethod
    def of(cls, recency_days: ArrayLike, frequency: ArrayLike) -> RfmScale:
        """The scale of a population; customers without a purchase (no recency) are no
        buyers and take no part."""
        recency = np.asarray(recency_days, dtype=np.float64)
        freq = np.asarray(frequency, dtype=np.float64)
        buyers = ~np.isnan(recency) & ~np.isnan(freq)
        return cls(*_counted(recency[buyers]), *_counted(freq[buyers]))

    @property
    def buyers(self) -> int:
        return int(self.recency_below[-1])

    def scores(
        self, recency_days: ArrayLike, frequency: ArrayLike
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """R and F scores (1-5, 5 best) of these customers among the scale's buyers."""
        recency = np.asarray(recency_days, dtype=np.float64)
        freq = np.asarray(frequency, dtype=np.float64)
        count = max(self.buyers, 1)
        # R: fewer days is better, so the rank counts the buyers with more days.
        above = self.buyers - self.recency_below[np.searchsorted(self.recency, recency, "right")]
        below = self.frequency_below[np.searchsorted(self.frequency, freq, "left")]
        return _score((above + 1).astype(np.float64), count), _score(
            (below + 1).astype(np.float64), count
        )

    def segments(self, recency_days: ArrayLike, frequency: ArrayLike) -> NDArray[np.object_]:
        """Each customer's segment; None for one who never bought (no recency)."""
        recency = np.asarray(recency_days, dtype=np.float64)
        freq = np.asarray(frequency, dtype=np.float64)
        r, f = self.scores(recency, freq)
        out = np.full(len(recency), None, dtype=object)
        for name, rs, fs in reversed(GRID):  # the first match wins: written last
            out[np.isin(r, rs) & np.isin(f, fs)] = name
        bought = ~np.isnan(recency) & ~np.isnan(freq)
        out[(out == None) & bought] = "other"  # noqa: E711 (elementwise)
        out[~bought] = None
        return out


def scale_at(con: duckdb.DuckDBPyConnection, as_of: date) -> RfmScale:
    """The scale of every buyer before ``as_of`` in a loaded dataset's connection, read from
    the purchase-day rollup as features.rfm reads it (for an engine that builds the features
    elsewhere: Spark)."""
    ensure_rollups(con)
    today = date_literal(as_of)
    recency, frequency = (
        con.execute(
            f"SELECT date_diff('day', max(day), {today}) AS r, count(*) AS f FROM purchase_days "
            f"WHERE day < {today} GROUP BY customer_id"
        )
        .fetchnumpy()
        .values()
    )
    return RfmScale.of(recency, frequency)
