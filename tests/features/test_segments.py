"""RFM segments: quintile scores with ties at the lowest, the grid, a part against the whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.segments import GRID, SEGMENTS, RfmScale


def _pandas_segments(recency: pd.Series, frequency: pd.Series) -> list[str]:
    """The definition, written with pandas' ranking (percentile rank, ties at the minimum)."""

    def score(values: pd.Series, higher_is_better: bool) -> pd.Series:
        pct = values.rank(pct=True, method="min", ascending=higher_is_better)
        return np.ceil(pct * 5).clip(1, 5).astype(int)

    r, f = score(recency, False), score(frequency, True)
    out = pd.Series(pd.NA, index=recency.index, dtype="object")
    for name, rs, fs in GRID:
        out[out.isna() & r.isin(rs) & f.isin(fs)] = name
    return out.fillna("other").tolist()


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_segments_equal_the_pandas_ranking_ties_included(size: int) -> None:
    rng = np.random.default_rng(size)
    recency = pd.Series(rng.integers(0, 60, size).astype(float))  # many ties
    frequency = pd.Series(rng.geometric(0.5, size).astype(float))
    scale = RfmScale.of(recency, frequency)
    assert scale.segments(recency, frequency).tolist() == _pandas_segments(recency, frequency)


def test_a_part_is_ranked_among_the_whole_and_non_buyers_have_none() -> None:
    rng = np.random.default_rng(3)
    recency = pd.Series(rng.integers(0, 400, 5000).astype(float))
    frequency = pd.Series(rng.geometric(0.3, 5000).astype(float))
    scale = RfmScale.of([*recency, np.nan, np.nan], [*frequency, 0, 0])  # two never bought
    whole = _pandas_segments(recency, frequency)
    assert scale.segments(recency[:50], frequency[:50]).tolist() == whole[:50]
    assert scale.segments([np.nan, 3.0], [0.0, 40.0]).tolist() == [None, "champions"]
    # Most recent and most frequent: champions; long gone and once: lost.
    assert scale.segments([0.0, 399.0], [frequency.max(), 1.0]).tolist() == ["champions", "lost"]
    assert set(whole) <= {*SEGMENTS, "other"}
