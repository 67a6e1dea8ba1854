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

__all__ = [
    "BLOCK",
    "PARALLEL",
    "Forest",
    "PerBooster",
    "Tables",
    "block_combos",
    "block_scratch",
    "block_tests",
    "cut_groups",
    "distinct_tests",
    "float32_rows",
    "forest",
    "forest_trees",
    "probe_rows",
    "tables",
]

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
# Rows evaluated together: each test's outcomes for a block are one 64-bit word.
BLOCK = 64
# From this many rows, blocks run on every core (numba prange); fewer (a service request)
# stay on the calling thread: a service runs a worker per core.
PARALLEL = 4096
# Tests whose outcomes index one of Tables' lookup tables (2^8 float32: 1 KiB each).
TABLE_BITS = 8
# A path longer than this (a deeper tree) makes a table too large: XGBoost predicts.
LONGEST_PATH = 12


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


@dataclass(frozen=True)
class Tables:
    """A booster's trees as lookup tables (see the module doc); :meth:`predict` is
    ``inplace_predict``."""

    node_feature: np.ndarray  # (N,) int64: every distinct test of the trees' internal nodes
    node_threshold: np.ndarray  # (N,) float32: left when x < threshold
    node_default_left: np.ndarray  # (N,) bool: where a missing value goes
    group_nodes: np.ndarray  # (G, B) int64: the tests whose outcomes index a table, -1 padding
    group_bits: np.ndarray  # (G,) int64: how many
    group_output: np.ndarray  # (G,) int64: the output (class) its tree adds to
    group_offset: np.ndarray  # (G,) int64: where its 2^bits entries start in ``table``
    table: np.ndarray  # float32: the leaf value for each outcome, 0 where the path leaves
    base: np.ndarray  # (K,) float32
    transform: int
    features: int

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """As ``inplace_predict``: (rows,) or, with several outputs, (rows, K) float32."""
        x = float32_rows(matrix, self.features)
        out = np.empty((len(x), len(self.base)), dtype=np.float32)
        args = (
            x, self.node_feature, self.node_threshold, self.node_default_left, self.group_nodes,
            self.group_bits, self.group_output, self.group_offset, self.table, self.base,
            self.transform, out,
        )  # fmt: skip
        if len(x) < PARALLEL:
            _table_rows(0, len(x), *args)
        else:
            _table_blocks(*args)
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


def _tables_checked(booster: Any) -> Tables | None:
    trees = forest(booster)  # the base margin and transform, checked bit-equal
    if trees is None:
        return None
    built = forest_tables(trees)
    if built is None:
        return None
    probe = _probe(trees)
    expected = booster.inplace_predict(probe, validate_features=False)
    return built if np.array_equal(built.predict(probe), expected, equal_nan=True) else None


tables = PerBooster(_tables_checked, CACHED)
tables.__doc__ = "The booster's lookup tables, or None where XGBoost must be used."


def cut_groups(left: Any, right: Any, root: int, bits: int) -> list[tuple[list[int], list[int]]]:
    """The tree at ``root`` cut into subtrees whose leaves depend on at most ``bits`` tests
    (the path down to the subtree and the subtree's own): (those internal nodes, the path's
    first, then the subtree's leaves) for each. A subtree too large for that is cut at its
    root; a path longer than ``bits`` ends in a group of the path and a leaf."""

    def below(node: int) -> tuple[list[int], list[int]]:
        if left[node] == -1:
            return [], [node]
        a, b = below(left[node]), below(right[node])
        return [node, *a[0], *b[0]], a[1] + b[1]

    out: list[tuple[list[int], list[int]]] = []

    def cut(node: int, prefix: list[int]) -> None:
        inner, leaves = below(node)
        if len(prefix) + len(inner) <= max(bits, len(prefix)):
            out.append((prefix + inner, leaves))
        else:
            cut(left[node], [*prefix, node])
            cut(right[node], [*prefix, node])

    cut(root, [])
    return out


def distinct_tests(
    feature: Any, threshold: Any, default_left: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(the test of each node, then each distinct test's feature, float32 threshold and
    default branch): nodes with the same (feature, threshold, missing branch) share one."""
    distinct: dict[tuple[int, float, bool], int] = {}
    keys = zip(
        np.asarray(feature).tolist(),
        np.asarray(threshold, dtype=np.float32).tolist(),
        np.asarray(default_left, dtype=np.bool_).tolist(),
        strict=True,
    )
    test_of_node = np.array([distinct.setdefault(k, len(distinct)) for k in keys], np.int64)
    f, t, d = zip(*distinct, strict=True) if distinct else ((), (), ())
    return (
        test_of_node,
        np.asarray(f, dtype=np.int64),
        np.asarray(t, dtype=np.float32),
        np.asarray(d, dtype=np.bool_),
    )


def forest_tables(trees: Forest) -> Tables | None:
    """``trees`` as lookup tables of at most ``TABLE_BITS`` tests each (None for a path
    longer than ``LONGEST_PATH``)."""
    left, right, value = trees.left, trees.right, trees.value
    inner = left >= 0
    test_of_node = np.full(len(left), -1, dtype=np.int64)
    test_of_node[inner], feature, threshold, default_left = distinct_tests(
        trees.feature[inner], value[inner], trees.default_left[inner]
    )
    position = np.full(len(left), -1, dtype=np.int64)
    nodes_of: list[list[int]] = []
    outputs, parts = [], []
    left_list, right_list = left.tolist(), right.tolist()
    for root, output in zip(trees.roots.tolist(), trees.group.tolist(), strict=True):
        for nodes, leaves in cut_groups(left_list, right_list, root, TABLE_BITS):
            if len(nodes) > LONGEST_PATH:
                return None
            combos = np.arange(1 << len(nodes))
            position[nodes] = np.arange(len(nodes))
            at = np.full(len(combos), root)
            for _ in range(len(nodes)):  # each step goes down a level, or stays outside
                bit = position[at]
                goes_left = (combos >> np.maximum(bit, 0)) & 1 == 1
                at = np.where(bit >= 0, np.where(goes_left, left[at], right[at]), at)
            position[nodes] = -1
            landed = np.isin(at, leaves)
            parts.append(np.where(landed, value[at], np.float32(0)).astype(np.float32))
            nodes_of.append([int(test_of_node[n]) for n in nodes])
            outputs.append(output)
    group_nodes = np.full((len(nodes_of), max(map(len, nodes_of))), -1, dtype=np.int64)
    for g, tests in enumerate(nodes_of):
        group_nodes[g, : len(tests)] = tests
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    return Tables(
        node_feature=feature,
        node_threshold=threshold,
        node_default_left=default_left,
        group_nodes=group_nodes,
        group_bits=np.array([len(t) for t in nodes_of], dtype=np.int64),
        group_output=np.asarray(outputs, dtype=np.int64),
        group_offset=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64),
        table=np.concatenate(parts),
        base=trees.base,
        transform=trees.transform,
        features=trees.features,
    )


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


@numba.njit(cache=True, nogil=True)
def block_scratch(features: int, tests: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A thread's buffers for :func:`block_tests` and :func:`block_combos`: each test's
    outcome bits, each row's table index, the block's rows transposed."""
    goes_left = np.empty(tests, dtype=np.uint64)
    combo = np.empty(BLOCK, dtype=np.int64)
    return goes_left, combo, np.empty((features, BLOCK), dtype=np.float32)


@numba.njit(cache=True, nogil=True)
def block_tests(
    x: np.ndarray, first: int, rows: int, block: np.ndarray, node_feature: np.ndarray,
    node_threshold: np.ndarray, node_default_left: np.ndarray, goes_left: np.ndarray,
) -> None:  # fmt: skip
    """Rows ``first:first+rows`` (at most ``BLOCK``) of ``x`` transposed into ``block``, then
    each test's outcomes as one bit per row in ``goes_left`` (bit ``j``: row ``first + j``
    goes left). Without branches: three times as fast as with."""
    for j in range(rows):
        for f in range(x.shape[1]):
            block[f, j] = x[first + j, f]
    for n in range(node_feature.shape[0]):
        values, threshold, default = block[node_feature[n]], node_threshold[n], node_default_left[n]
        bits = np.uint64(0)
        for j in range(rows):
            v = values[j]
            bits |= np.uint64((v < threshold) | (default & (v != v))) << np.uint64(j)
        goes_left[n] = bits


@numba.njit(cache=True, nogil=True)
def block_combos(
    goes_left: np.ndarray, tests: np.ndarray, bits: int, rows: int, combo: np.ndarray
) -> None:
    """``combo[j]``: the outcomes of ``tests[:bits]`` for row ``j`` of the block, as the bits
    of an index (bit ``b`` set: the row goes left at ``tests[b]``)."""
    one = np.uint64(1)
    combo[:rows] = 0
    for b in range(bits):
        word = goes_left[tests[b]]
        for j in range(rows):
            combo[j] |= int((word >> np.uint64(j)) & one) << b


@numba.njit(cache=True, nogil=True)
def _table_rows(
    start: int, stop: int, x: np.ndarray, node_feature: np.ndarray, node_threshold: np.ndarray,
    node_default_left: np.ndarray, group_nodes: np.ndarray, group_bits: np.ndarray,
    group_output: np.ndarray, group_offset: np.ndarray, table: np.ndarray, base: np.ndarray,
    transform: int, out: np.ndarray,
) -> None:  # fmt: skip
    """Rows ``start:stop`` of ``out``: the base margin plus the trees' values in tree order,
    block by block on one thread, then the objective's transform."""
    goes_left, combo, block = block_scratch(x.shape[1], node_feature.shape[0])
    sums = np.empty((out.shape[1], BLOCK), dtype=np.float32)  # the block's, output-major
    for first in range(start, stop, BLOCK):
        rows = min(BLOCK, stop - first)
        block_tests(x, first, rows, block, node_feature, node_threshold, node_default_left,
                    goes_left)  # fmt: skip
        for k in range(out.shape[1]):
            sums[k, :rows] = base[k]
        for g in range(group_bits.shape[0]):
            block_combos(goes_left, group_nodes[g], group_bits[g], rows, combo)
            into, offset = sums[group_output[g]], group_offset[g]
            for j in range(rows):
                into[j] += table[offset + combo[j]]
        for j in range(rows):
            for k in range(out.shape[1]):
                out[first + j, k] = sums[k, j]
            _transform(out[first + j], transform)


@numba.njit(cache=True, nogil=True, parallel=True)
def _table_blocks(
    x: np.ndarray, node_feature: np.ndarray, node_threshold: np.ndarray,
    node_default_left: np.ndarray, group_nodes: np.ndarray, group_bits: np.ndarray,
    group_output: np.ndarray, group_offset: np.ndarray, table: np.ndarray, base: np.ndarray,
    transform: int, out: np.ndarray,
) -> None:  # fmt: skip
    """:func:`_table_rows` over blocks of ``BLOCK`` rows on every core."""
    rows = x.shape[0]
    for b in numba.prange((rows + BLOCK - 1) // BLOCK):
        _table_rows(
            b * BLOCK, min(rows, (b + 1) * BLOCK), x, node_feature, node_threshold,
            node_default_left, group_nodes, group_bits, group_output, group_offset, table, base,
            transform, out,
        )  # fmt: skip
