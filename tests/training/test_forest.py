"""training.models.forest gives XGBoost's predictions bit for bit, or steps aside."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb

from training.models import forest

OBJECTIVES = [
    ("binary:logistic", {}),
    ("multi:softprob", {"num_class": 4}),
    ("count:poisson", {}),
    ("reg:tweedie", {"tweedie_variance_power": 1.3}),
    ("reg:squarederror", {}),
]


def _booster(objective: str, depth: int = 5, **params):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    X = rng.normal(size=(700, 7)).astype(np.float32)
    X[:, 3] = np.round(X[:, 3])  # ties at the thresholds: x == threshold goes right
    X[rng.random(X.shape) < 0.2] = np.nan  # missing values take the default branches
    signal = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 3]) * 0.7
    if objective == "binary:logistic":
        y = (signal + rng.normal(size=700) > 0).astype(float)
    elif objective == "multi:softprob":
        y = np.digitize(signal, [-1, 0, 1]).astype(float)
    elif objective == "reg:squarederror":
        y = signal * 3 + 10
    else:
        y = rng.poisson(np.exp(signal / 2)).astype(float)
    params = {"objective": objective, "max_depth": depth, "nthread": 1, **params}
    return xgb.train(params, xgb.DMatrix(X, y), num_boost_round=40), X


@pytest.mark.parametrize(("objective", "params"), OBJECTIVES)
def test_predictions_are_xgboosts_bit_for_bit(objective: str, params: dict) -> None:
    booster, X = _booster(objective, **params)
    trees = forest.forest(booster)
    assert trees is not None, objective
    for rows in (X[:1], X[:9], X):
        got = trees.predict(rows)
        expected = booster.inplace_predict(rows, validate_features=False)
        assert got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_the_base_margin_is_the_boosters_own() -> None:
    # A constant target: every leaf is ~0 and the prediction is the base score's.
    X = np.zeros((50, 2), dtype=np.float32)
    booster = xgb.train({"objective": "reg:squarederror", "base_score": 3.25, "nthread": 1},
                        xgb.DMatrix(X, np.full(50, 3.25)), num_boost_round=3)  # fmt: skip
    trees = forest.forest(booster)
    assert trees is not None
    np.testing.assert_array_equal(trees.base, np.array([3.25], dtype=np.float32))
    np.testing.assert_array_equal(trees.predict(X[:2]), np.array([3.25, 3.25], dtype=np.float32))


def test_a_booster_it_does_not_cover_is_left_to_xgboost(categorical_booster) -> None:  # type: ignore[no-untyped-def]
    assert forest.forest(categorical_booster) is None
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    hinge = xgb.train({"objective": "binary:hinge", "nthread": 1},
                      xgb.DMatrix(X, (X[:, 0] > 0).astype(float)), num_boost_round=5)  # fmt: skip
    assert forest.forest(hinge) is None  # an objective whose transform it does not know


def test_a_walk_that_differs_from_xgboost_is_refused() -> None:
    booster, _ = _booster("binary:logistic")
    model = json.loads(booster.save_raw("json"))["learner"]
    built = forest.forest_trees(model)
    assert built is not None and forest._matched(built, booster, model) is not None
    # Thresholds nudged up: some rows then go left where XGBoost goes right.
    nudged = forest._with(built, built.base, built.transform)
    inner = nudged.left >= 0
    nudged.value[inner] = np.nextafter(nudged.value[inner], np.float32(np.inf))
    assert forest._matched(nudged, booster, model) is None


def test_wrong_width_is_named() -> None:
    booster, X = _booster("count:poisson")
    trees = forest.forest(booster)
    assert trees is not None
    with pytest.raises(ValueError, match=r"expected a \(rows, 7\) matrix"):
        trees.predict(X[:, :5])


def test_dart_and_linear_boosters_are_left_to_xgboost() -> None:
    from training.models import treeshap

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    data = xgb.DMatrix(X, (X[:, 0] > 0).astype(float))
    for booster_kind in ("dart", "gblinear"):
        params = {"objective": "binary:logistic", "booster": booster_kind, "nthread": 1}
        booster = xgb.train(params, data, num_boost_round=4)
        assert forest.forest(booster) is None, booster_kind
        assert treeshap.explainer(booster) is None, booster_kind


@pytest.mark.parametrize(("objective", "params"), OBJECTIVES)
def test_table_predictions_are_xgboosts_bit_for_bit(objective: str, params: dict) -> None:
    booster, X = _booster(objective, **params)
    built = forest.tables(booster)
    assert built is not None, objective
    rng = np.random.default_rng(5)
    # Beyond forest.PARALLEL rows the blocks run on every core; 700 rows end in a part block.
    many = X[rng.integers(0, len(X), forest.PARALLEL + 300)]
    for rows in (X[:1], X[:63], X, many):
        got = built.predict(rows)
        expected = booster.inplace_predict(rows, validate_features=False)
        assert got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_a_depth_4_tree_is_two_tables_of_its_halves() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4000, 4)).astype(np.float32)
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + X[:, 2] * X[:, 3]
    params = {"objective": "reg:squarederror", "max_depth": 4, "min_child_weight": 0, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(X, y), num_boost_round=1)
    built = forest.tables(booster)
    assert built is not None
    # The full tree's 15 tests: each half hangs on the root and its own 7.
    assert built.group_bits.tolist() == [8, 8]
    assert int(built.group_nodes[0, 0]) == int(built.group_nodes[1, 0])
    # A table's entries: the half's 8 leaves, each for the outcomes that reach it, else 0.
    first = built.table[: 1 << 8]
    reached_by = first[(np.arange(256) & 1) == 1]  # the root's test passed: the left half
    assert len(np.unique(reached_by)) == 8
    assert np.all(first[(np.arange(256) & 1) == 0] == 0)
    np.testing.assert_array_equal(
        built.predict(X), booster.inplace_predict(X, validate_features=False)
    )


def test_shared_tests_are_evaluated_once_for_the_tables() -> None:
    booster, _ = _booster("multi:softprob", num_class=4)
    trees = forest.forest(booster)
    built = forest.tables(booster)
    assert trees is not None and built is not None
    inner = trees.left >= 0
    distinct = set(
        zip(trees.feature[inner].tolist(), trees.value[inner].tolist(),
            trees.default_left[inner].tolist(), strict=True)
    )  # fmt: skip
    assert len(built.node_feature) == len(distinct) < int(inner.sum())


def test_tables_that_differ_from_xgboost_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    booster, _ = _booster("binary:logistic")
    made = forest.forest_tables

    def off_by_a_step(trees: forest.Forest) -> forest.Tables | None:
        built = made(trees)
        assert built is not None
        nudged = built.table.copy()
        nudged[nudged != 0] = np.nextafter(nudged[nudged != 0], np.float32(np.inf))
        return forest.Tables(**{**built.__dict__, "table": nudged})

    monkeypatch.setattr(forest, "forest_tables", off_by_a_step)
    assert forest.tables(booster) is None


def test_paths_too_long_for_a_table_are_left_to_xgboost(monkeypatch: pytest.MonkeyPatch) -> None:
    booster, X = _booster("reg:squarederror", depth=5)
    # Tables of 2 tests: the deepest groups are the paths to the leaves, 5 tests long.
    monkeypatch.setattr(forest, "TABLE_BITS", 2)
    monkeypatch.setattr(forest, "LONGEST_PATH", 4)
    assert forest.tables(booster) is None
    from training.models import native

    np.testing.assert_array_equal(  # native.predict falls back on XGBoost
        native.predict(booster, X), booster.inplace_predict(X, validate_features=False)
    )
