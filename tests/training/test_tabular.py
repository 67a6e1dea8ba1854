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


def _arrays(frame: pd.DataFrame, encoder: TabularEncoder) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(dtype=object if c in encoder.levels_ else float)
            for c in frame.columns}  # fmt: skip


@pytest.mark.parametrize("rows", [1, 500, MANY_ROWS + 7])
def test_an_encoding_shared_from_another_model_equals_its_own(rows: int) -> None:
    train = _frame(400)
    churn = TabularEncoder().fit(train)
    # The CLV model's columns: the same plus derived ones, in another order.
    clv = TabularEncoder().fit(train[["spend", "stage", "attr_region", "purchase_days"]]
                               .assign(btyd_alive=0.5, btyd_spend=1.0))  # fmt: skip
    frame = _frame(rows).assign(
        btyd_alive=np.linspace(0, 1, rows), btyd_spend=np.where(np.arange(rows) % 3, 2.0, np.nan)
    )
    arrays = _arrays(frame, clv)
    shared = clv.transform_sharing(arrays, churn, churn.transform(arrays))
    np.testing.assert_array_equal(shared, clv.transform(arrays))
    assert shared.dtype == np.float32 and shared.shape == (rows, len(clv.feature_names_))


def test_sharing_falls_back_when_the_levels_differ() -> None:
    train = _frame(400)
    churn = TabularEncoder().fit(train)
    other = train.copy()
    other.loc[other["stage"] == "churned", "stage"] = "advocacy"  # other levels of stage
    clv = TabularEncoder().fit(other)
    assert clv._sharing(churn) is None
    arrays = _arrays(_frame(50), clv)
    wrong = churn.transform(arrays)
    np.testing.assert_array_equal(
        clv.transform_sharing(arrays, churn, wrong), clv.transform(arrays)
    )


def test_sharing_names_a_column_that_is_not_numbers() -> None:
    train = _frame(400)
    churn = TabularEncoder().fit(train)
    clv = TabularEncoder().fit(train.assign(btyd_alive=0.5))
    frame = _frame(10)
    arrays = _arrays(frame, churn) | {"btyd_alive": np.array(["x"] * 10, dtype=object)}
    with pytest.raises(ValueError, match="feature btyd_alive: expected numbers"):
        clv.transform_sharing(arrays, churn, churn.transform(arrays))
