"""The feature matrix: the same numbers from a DataFrame and from columns of arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.models.tabular import FEW_ROWS, MANY_ROWS, TabularEncoder


def _frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(rows)
    return pd.DataFrame(
        {
            "purchase_days": rng.integers(0, 9, rows).astype(float),
            "stage": rng.choice(["purchase", "retention", "churned", None], rows),
            "spend": np.where(rng.random(rows) < 0.2, np.nan, rng.gamma(2.0, 40.0, rows)),
            "attr_region": rng.choice(["north", "south", "east", "unseen", None], rows),
        }
    )


@pytest.mark.parametrize("rows", [1, 3, FEW_ROWS, FEW_ROWS + 1, 500, MANY_ROWS + 7])
def test_arrays_and_frames_encode_alike(rows: int) -> None:
    train = _frame(400)
    train.loc[train["attr_region"] == "unseen", "attr_region"] = "west"  # unseen in fit
    encoder = TabularEncoder().fit(train)
    assert encoder.levels_["stage"] == ["churned", "purchase", "retention"]
    frame = _frame(rows)
    arrays = {c: frame[c].to_numpy(dtype=object if c in encoder.levels_ else float)
              for c in frame.columns}  # fmt: skip
    got = encoder.transform(arrays)
    np.testing.assert_array_equal(got, encoder.transform(frame))
    # One-hot: exactly one 1 per known level, none for a missing or unseen one.
    region = [encoder.feature_names_.index(f"attr_region={v}") for v in ("east", "north", "south")]
    known = frame["attr_region"].isin(["east", "north", "south"]).to_numpy()
    np.testing.assert_array_equal(got[:, region].sum(axis=1), known.astype(np.float32))
