"""training.models.native gives XGBoost's own numbers, through its C API."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from training.models import native


def _booster(objective: str, **params) -> tuple[xgb.Booster, np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.15] = np.nan  # missing values take the default branches
    signal = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) * 0.5
    if objective == "binary:logistic":
        y = (signal + rng.normal(size=600) > 0).astype(float)
    elif objective == "multi:softprob":
        y = np.digitize(signal, [-0.5, 0.5]).astype(float)
    else:
        y = rng.poisson(np.exp(signal / 2)).astype(float)
    params = {"objective": objective, "max_depth": 4, "nthread": 1, **params}
    booster = xgb.train(params, xgb.DMatrix(X, y), num_boost_round=25)
    return booster, X


OBJECTIVES = [
    ("binary:logistic", {}),
    ("multi:softprob", {"num_class": 3}),
    ("count:poisson", {}),
    ("reg:tweedie", {"tweedie_variance_power": 1.3}),
]


@pytest.mark.parametrize(("objective", "params"), OBJECTIVES)
@pytest.mark.parametrize("rows", [1, 5, 16, 600])
def test_predictions_equal_inplace_predict(objective: str, params: dict, rows: int) -> None:
    booster, X = _booster(objective, **params)
    expected = booster.inplace_predict(X[:rows], validate_features=False)
    got = native.predict(booster, X[:rows])
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("approx", [False, True])
@pytest.mark.parametrize("rows", [1, 600])
def test_contributions_equal_pred_contribs(approx: bool, rows: int) -> None:
    booster, X = _booster("binary:logistic")
    expected = booster.predict(xgb.DMatrix(X[:rows]), pred_contribs=True, approx_contribs=approx)
    got = native.contributions(booster, X[:rows], approx)
    assert got.shape == (rows, X.shape[1] + 1)
    np.testing.assert_array_equal(got, expected)
    # They add up to the margin, bias included.
    margin = booster.predict(xgb.DMatrix(X[:rows]), output_margin=True)
    np.testing.assert_allclose(got.sum(axis=1), margin, atol=1e-5)


def test_results_are_copies_not_the_boosters_reused_buffer() -> None:
    booster, X = _booster("binary:logistic")
    first = native.predict(booster, X[:3])
    kept = first.copy()
    native.predict(booster, X[3:6])
    np.testing.assert_array_equal(first, kept)


def test_float64_and_strided_input_are_converted() -> None:
    booster, X = _booster("binary:logistic")
    wide = np.asfortranarray(X[:50].astype(np.float64))
    np.testing.assert_array_equal(
        native.predict(booster, wide), booster.inplace_predict(X[:50], validate_features=False)
    )


def test_threads_predicting_at_once_each_get_their_own_rows() -> None:
    from concurrent.futures import ThreadPoolExecutor

    booster, X = _booster("count:poisson")
    expected = booster.inplace_predict(X, validate_features=False)

    def rows(start: int) -> tuple[int, np.ndarray]:
        return start, np.concatenate(
            [native.predict(booster, X[i : i + 1]) for i in range(start, start + 150)]
        )

    with ThreadPoolExecutor(4) as pool:
        for start, got in pool.map(rows, range(0, 600, 150)):
            np.testing.assert_array_equal(got, expected[start : start + 150])
