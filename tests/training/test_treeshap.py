"""training.models.treeshap gives XGBoost's exact contributions (pred_contribs=True)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb

from training.models import treeshap


def _booster(depth: int, features: int = 6, objective: str = "binary:logistic", rounds: int = 30,
             **params):  # type: ignore[no-untyped-def]  # fmt: skip
    rng = np.random.default_rng(depth)
    X = rng.normal(size=(800, features)).astype(np.float32)
    X[:, -1] = np.round(X[:, -1])  # ties at the thresholds: x == threshold goes right
    X[rng.random(X.shape) < 0.15] = np.nan  # missing values take the default branches
    signal = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) * 0.5 + np.nan_to_num(X[:, -1])
    if objective == "binary:logistic":
        y = (signal + rng.normal(size=len(X)) > 0).astype(float)
    else:
        y = signal + rng.normal(size=len(X))
    params = {"objective": objective, "max_depth": depth, "nthread": 1, "eta": 0.3, **params}
    return xgb.train(params, xgb.DMatrix(X, y), num_boost_round=rounds), X


def _expected(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    return booster.predict(xgb.DMatrix(X), pred_contribs=True).astype(np.float64)


@pytest.mark.parametrize("depth", [1, 2, 4, 6])
# Row by row (< FEW), blocks of 64 on the calling thread (< native.SMALL, with a part block)
# and blocks on every core.
@pytest.mark.parametrize("rows", [1, 3, 7, 800, 4801])
def test_contributions_equal_xgboosts_exact_ones(depth: int, rows: int) -> None:
    booster, X = _booster(depth)
    X = np.tile(X, (-(-rows // len(X)), 1))
    tables = treeshap.explainer(booster)
    assert tables is not None
    got = tables.contributions(X[:rows])
    expected = _expected(booster, X[:rows])
    assert got.shape == expected.shape == (rows, X.shape[1] + 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    margin = booster.predict(xgb.DMatrix(X[:rows]), output_margin=True)
    np.testing.assert_allclose(got.sum(axis=1), margin, atol=2e-5)  # they add up to the margin


def test_a_feature_tested_twice_on_a_path_is_one_player() -> None:
    # Two features, depth 5: every path tests a feature several times.
    booster, X = _booster(5, features=2)
    tables = treeshap.explainer(booster)
    assert tables is not None
    assert (tables.group_width <= 2).all()  # two features: no group adds to more
    np.testing.assert_allclose(tables.contributions(X), _expected(booster, X), atol=2e-5)


def test_regression_objective_and_a_feature_no_tree_uses() -> None:
    booster, X = _booster(3, features=8, objective="reg:squarederror")
    tables = treeshap.explainer(booster)
    assert tables is not None
    got = tables.contributions(X)
    np.testing.assert_allclose(got, _expected(booster, X), atol=2e-5)
    unused = set(range(8)) - set(tables.node_feature.tolist())
    for f in unused:
        assert (got[:, f] == 0).all()


def test_hand_made_stump_values() -> None:
    # One split on feature 0 at 0.5 over base score 0.25: covers 30 (left) / 10 (right),
    # leaves -0.25 and +0.75, whose cover-weighted mean is 0. The bias is 0.25 + 0; a row
    # going right gets 0.75 on feature 0, one going left -0.25.
    X = np.array([[0.0], [0.0], [0.0], [1.0]] * 10, dtype=np.float32)
    y = np.array([0.0, 0.0, 0.0, 1.0] * 10)
    params = {"objective": "reg:squarederror", "max_depth": 1, "eta": 1.0, "lambda": 0.0,
              "base_score": 0.25, "nthread": 1}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(X, y), num_boost_round=1)
    tables = treeshap.explainer(booster)
    assert tables is not None
    rows = np.array([[1.0], [0.0], [np.nan]], dtype=np.float32)
    got = tables.contributions(rows)
    # A split that saw no missing values sends them right (XGBoost's default direction).
    assert not tables.node_default_left[0]
    np.testing.assert_allclose(got[:, 0], [0.75, -0.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(got[:, 1], [0.25, 0.25, 0.25], atol=1e-6)  # the mean prediction
    np.testing.assert_allclose(got, _expected(booster, rows), atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "multi:softprob", "num_class": 3},  # several outputs
        {"max_depth": treeshap.MAX_DEPTH + 2},  # tables too large
    ],
)
def test_boosters_it_does_not_cover_are_left_to_xgboost(params: dict) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    y = rng.integers(0, 3, 400).astype(float)
    if params.get("objective") != "multi:softprob":
        y = (y > 1).astype(float)
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1, **params},
                        xgb.DMatrix(X, y), num_boost_round=5)  # fmt: skip
    assert treeshap.explainer(booster) is None


def test_categorical_splits_are_left_to_xgboost(categorical_booster) -> None:  # type: ignore[no-untyped-def]
    assert treeshap.explainer(categorical_booster) is None
    assert treeshap.approx_explainer(categorical_booster) is None


@pytest.mark.parametrize("depth", [1, 4, 8])  # the approximate values have no depth limit
@pytest.mark.parametrize("rows", [1, 800, 4801])  # one row, the calling thread, every core
@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror"])
def test_approximate_contributions_equal_xgboosts(depth: int, rows: int, objective: str) -> None:
    booster, X = _booster(depth, objective=objective)
    X = np.tile(X, (-(-rows // len(X)), 1))[:rows]
    paths = treeshap.approx_explainer(booster)
    assert paths is not None
    got = paths.contributions(X)
    expected = booster.predict(xgb.DMatrix(X), pred_contribs=True, approx_contribs=True)
    assert got.shape == expected.shape == (rows, X.shape[1] + 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    # Not the exact values: the approximation credits the features along the row's path only.
    assert depth == 1 or np.abs(got - _expected(booster, X)).max() > 1e-3


def test_approximate_contributions_leave_several_outputs_to_xgboost() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300).astype(float)
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1},
                        xgb.DMatrix(X, y), num_boost_round=3)  # fmt: skip
    assert treeshap.approx_explainer(booster) is None


def test_wrong_width_is_named() -> None:
    booster, X = _booster(2)
    tables = treeshap.explainer(booster)
    assert tables is not None
    with pytest.raises(ValueError, match=r"expected a \(rows, 6\) matrix"):
        tables.contributions(X[:, :4])


def test_a_depth_4_tree_is_explained_by_its_four_depth_2_subtrees() -> None:
    # A full depth-4 tree: each group is a depth-2 subtree (3 tests) under its 2-test path.
    booster, X = _booster(4, features=6, rounds=1, min_child_weight=0, gamma=0, reg_lambda=0)
    tables = treeshap.explainer(booster)
    assert tables is not None
    assert tables.group_bits.tolist() == [5, 5, 5, 5]
    first, second = tables.group_nodes[:, 0], tables.group_nodes[:, 1]
    assert len(set(first.tolist())) == 1  # the root's test indexes every group
    assert second[0] == second[1] and second[2] == second[3]  # its children's, two each
    assert (tables.group_width <= tables.group_bits).all()
    sizes = 2**tables.group_bits * tables.group_width
    assert len(tables.table) == sizes.sum()
    np.testing.assert_allclose(tables.contributions(X), _expected(booster, X), atol=2e-5)


def test_a_test_shared_by_several_nodes_is_evaluated_once() -> None:
    booster, X = _booster(4, features=3, rounds=40)
    tables = treeshap.explainer(booster)
    assert tables is not None
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]
    nodes = sum(sum(1 for c in t["left_children"] if c != -1) for t in model["trees"])
    tests = set(
        zip(tables.node_feature.tolist(), tables.node_threshold.tolist(),
            tables.node_default_left.tolist(), strict=True)
    )  # fmt: skip
    assert len(tests) == len(tables.node_feature) < nodes  # distinct, and fewer than the nodes
    np.testing.assert_allclose(tables.contributions(X), _expected(booster, X), atol=2e-5)
