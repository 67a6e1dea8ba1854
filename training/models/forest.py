"""XGBoost's predictions for a few rows, by a compiled walk over the booster's own trees.

Below a few hundred rows, an XGBoost prediction is mostly fixed cost inside the library
(about 60 us a call here for one row, whatever the model size): a service request, which
makes three such calls, spends more there than walking the trees. Here the trees are read
once from the booster's JSON model and walked with Numba, in XGBoost's own arithmetic:
float32 margins that start at the base margin and add each tree's leaf in tree order,
``x < threshold`` to the left, a missing value along the default branch, then the
objective's transform (logistic, softmax with a double sum, exp). The result must be
bit-equal: :func:`forest` compares it with ``inplace_predict`` on probe rows around every
threshold when it is built, and returns None (use XGBoost) for a booster that differs or
that it does not cover (categorical splits, other objectives, several targets).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numba
import numpy as np

__all__ = ["Forest", "PerBooster", "float32_rows", "forest", "forest_trees", "probe_rows"]

Built = TypeVar("Built")

# Objectives and the transform code of each (see _transform).
TRANSFORMS = {
    "binary:logistic": 1,
    "multi:softprob": 2,
    "count:poisson": 3,
    "reg:tweedie": 3,
    "reg:squarederror": 0,
}
CACHED = 16  # boosters whose trees are kept (a service holds four)


@dataclass(frozen=True)
class Forest:
    left: np.ndarray  # (N,) int64, every node of every tree: left child, -1 at a leaf
    right: np.ndarray  # (N,) int64
    feature: np.ndarray  # (N,) int64
    value: np.ndarray  # (N,) float32: the split threshold, or the leaf value at a leaf
    default_left: np.ndarray  # (N,) bool
    roots: np.ndarray  # (T,) int64
    group: np.ndarray  # (T,) int64: the output each tree adds to
    base: np.ndarray  # (K,) float32: the base margin of each output
    transform: int
    features: int

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """As ``inplace_predict``: (rows,) or, with several outputs, (rows, K) float32."""
        x = float32_rows(matrix, self.features)
        out = np.empty((len(x), len(self.base)), dtype=np.float32)
        _predict(
            x, self.left, self.right, self.feature, self.value, self.default_left,
            self.roots, self.group, self.base, self.transform, out,
        )  # fmt: skip
        return out[:, 0] if out.shape[1] == 1 else out


class PerBooster(Generic[Built]):
    """What ``build`` makes of a booster (or None), built once per booster object and kept
    for the ``keep`` latest boosters (a service holds four; tuning fits many)."""

    def __init__(self, build: Callable[[Any], Built | None], keep: int) -> None:
        self.build, self.keep = build, keep
        self.built: dict[int, tuple[Any, Built | None]] = {}
        self.lock = threading.Lock()

    def __call__(self, booster: Any) -> Built | None:
        cached = self.built.get(id(booster))
        if cached is not None and cached[0] is booster:
            return cached[1]
        with self.lock:
            made = self.build(booster)
            if len(self.built) >= self.keep:
                del self.built[next(iter(self.built))]
            self.built[id(booster)] = (booster, made)
        return made


def float32_rows(matrix: np.ndarray, features: int) -> np.ndarray:
    """``matrix`` as C-contiguous float32 rows of ``features`` columns, or a clear error."""
    x = np.ascontiguousarray(matrix, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"expected a (rows, {features}) matrix, got {x.shape}")
    return x


def _checked(booster: Any) -> Forest | None:
    model = json.loads(booster.save_raw("json"))["learner"]
    built = forest_trees(model)
    return _matched(built, booster, model) if built is not None else None


forest = PerBooster(_checked, CACHED)
forest.__doc__ = "The booster's trees, or None where XGBoost must be used (see the module doc)."


def forest_trees(model: dict[str, Any]) -> Forest | None:
    """The trees of a booster's JSON model (its ``learner``), the base margin still 0; None
    for what this module does not cover."""
    params = model["learner_model_param"]
    transform = TRANSFORMS.get(model["objective"]["name"])
    if model["gradient_booster"].get("name") != "gbtree":  # dart, gblinear: XGBoost's own
        return None
    trees = model["gradient_booster"]["model"].get("trees")
    if transform is None or int(params.get("num_target", "1")) > 1 or not trees:
        return None
    if any(any(t["split_type"]) or t["categories"] for t in trees):
        return None
    outputs = max(int(params.get("num_class", "0")), 1)
    left: list[int] = []
    right: list[int] = []
    default_left: list[bool] = []
    feature, value, roots = [], [], []
    for tree in trees:
        offset = len(left)
        roots.append(offset)
        left.extend(c + offset if c != -1 else -1 for c in tree["left_children"])
        right.extend(c + offset if c != -1 else -1 for c in tree["right_children"])
        feature.extend(tree["split_indices"])
        value.extend(tree["split_conditions"])
        default_left.extend(bool(d) for d in tree["default_left"])
    group = model["gradient_booster"]["model"]["tree_info"]
    return Forest(
        left=np.asarray(left, dtype=np.int64),
        right=np.asarray(right, dtype=np.int64),
        feature=np.asarray(feature, dtype=np.int64),
        value=np.asarray(value, dtype=np.float32),
        default_left=np.asarray(default_left, dtype=np.bool_),
        roots=np.asarray(roots, dtype=np.int64),
        group=np.asarray(group, dtype=np.int64),
        base=np.zeros(outputs, dtype=np.float32),  # found by _matched
        transform=transform,
        features=int(params["num_feature"]),
    )


def probe_rows(feature: np.ndarray, threshold: np.ndarray, features: int) -> np.ndarray:
    """Rows that test every split at its edge: values at a threshold, one float32 step
    below and above it, a little further off, or missing (a tenth of them)."""
    rng = np.random.default_rng(0)
    rows = 256
    probe = np.empty((rows, features), dtype=np.float32)
    for f in range(features):
        cuts = threshold[feature == f].astype(np.float32)
        if not len(cuts):
            probe[:, f] = rng.normal(size=rows)
            continue
        at = rng.choice(cuts, rows)
        off = np.float32(1e-3) * np.maximum(np.abs(at), np.float32(1))
        below, above = np.nextafter(at, np.float32(-np.inf)), np.nextafter(at, np.float32(np.inf))
        edges = np.stack([at, below, above, at - off, at + off])
        probe[:, f] = edges[rng.integers(0, len(edges), rows), np.arange(rows)]
    probe[rng.random(probe.shape) < 0.1] = np.nan
    return probe


def _probe(built: Forest) -> np.ndarray:
    inner = built.left >= 0
    return probe_rows(built.feature[inner], built.value[inner], built.features)


def _matched(built: Forest, booster: Any, model: dict[str, Any]) -> Forest | None:
    """``built`` with XGBoost's base margin, if its predictions are then bit-equal."""
    import xgboost as xgb

    probe = _probe(built)
    margins = booster.predict(xgb.DMatrix(probe), output_margin=True).reshape(len(probe), -1)
    margins = margins.astype(np.float32)
    expected = booster.inplace_predict(probe, validate_features=False)
    for seed in _base_guesses(built, booster, model):
        for step in (0, 1, -1, 2, -2, 3, -3):
            base = seed.copy()
            for _ in range(abs(step)):
                base = np.nextafter(base, np.float32(np.inf if step > 0 else -np.inf))
            if np.array_equal(_margins(_with(built, base, 0), probe), margins, equal_nan=True):
                final = _with(built, base, built.transform)
                same = np.array_equal(final.predict(probe), expected, equal_nan=True)
                return final if same else None
    return None


def _base_guesses(built: Forest, booster: Any, model: dict[str, Any]) -> list[np.ndarray]:
    """Candidates for the base margin: the objective's link of the stored base score (in
    float32, as XGBoost computes it), and XGBoost's margin of an all-missing row less the
    trees' sum (which may be off by rounding)."""
    import xgboost as xgb

    text = model["learner_model_param"]["base_score"].strip("[]")
    score = np.array([float(v) for v in text.split(",")], dtype=np.float32)
    score = np.broadcast_to(score, built.base.shape).astype(np.float32)
    one = np.float32(1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if built.transform == 1:
            link = (-np.log(one / score - one)).astype(np.float32)
        elif built.transform == 3:
            link = np.log(score).astype(np.float32)
        else:
            link = score
    empty = np.full((1, built.features), np.nan, dtype=np.float32)
    trees = _margins(_with(built, np.zeros_like(built.base), 0), empty)[0]
    margin = booster.predict(xgb.DMatrix(empty), output_margin=True).reshape(-1)
    return [link, (margin - trees).astype(np.float32)]


def _with(built: Forest, base: np.ndarray, transform: int) -> Forest:
    fields = {**built.__dict__, "base": base.astype(np.float32), "transform": transform}
    return Forest(**fields)


def _margins(built: Forest, x: np.ndarray) -> np.ndarray:
    out = built.predict(x)
    return out.reshape(len(x), -1)


@numba.njit(cache=True, nogil=True)
def _predict(
    x: np.ndarray, left: np.ndarray, right: np.ndarray, feature: np.ndarray, value: np.ndarray,
    default_left: np.ndarray, roots: np.ndarray, group: np.ndarray, base: np.ndarray,
    transform: int, out: np.ndarray,
) -> None:  # fmt: skip
    """Margins of every row in float32, tree by tree, then the objective's transform."""
    outputs = base.shape[0]
    for r in range(x.shape[0]):
        for k in range(outputs):
            out[r, k] = base[k]
        for t in range(roots.shape[0]):
            n = roots[t]
            while left[n] >= 0:
                v = x[r, feature[n]]
                if np.isnan(v):
                    n = left[n] if default_left[n] else right[n]
                elif v < value[n]:
                    n = left[n]
                else:
                    n = right[n]
            out[r, group[t]] += value[n]
        _transform(out[r], transform)


@numba.njit(cache=True, nogil=True)
def _transform(margin: np.ndarray, transform: int) -> None:
    """XGBoost's prediction transforms (common::Sigmoid, common::Softmax, expf)."""
    one = np.float32(1.0)
    if transform == 1:
        for k in range(margin.shape[0]):
            margin[k] = one / (np.float32(np.exp(min(-margin[k], np.float32(88.7)))) + one)
    elif transform == 2:
        top = margin[0]
        for k in range(1, margin.shape[0]):
            top = max(top, margin[k])
        total = 0.0  # a double, as in XGBoost
        for k in range(margin.shape[0]):
            margin[k] = np.float32(np.exp(margin[k] - top))
            total += margin[k]
        for k in range(margin.shape[0]):
            margin[k] = margin[k] / np.float32(total)
    elif transform == 3:
        for k in range(margin.shape[0]):
            margin[k] = np.float32(np.exp(margin[k]))
