"""Exact TreeSHAP contributions of an XGBoost booster, compiled from the booster's own trees.

XGBoost's exact contributions (``pred_contribs=True``) are the Shapley values of the
path-dependent game of each tree (Lundberg et al. 2020, "From local explanations to global
understanding with explainable AI for trees", Algorithm 2): a feature outside the coalition
follows every branch weighted by the training cover. XGBoost computes them with the
polynomial TreeSHAP recursion, O(T L D^2) per row; measured here that is about 160 us per
customer for a 144-tree depth-4 churn model, most of a service request and most of batch
scoring.

The same values come from per-leaf tables (Yang 2021, "Fast TreeSHAP", algorithm v2). For a
leaf ``l`` whose path tests the distinct features ``P_l``, let ``o_k`` be 1 when the row
takes the path's branch at every test of feature ``k`` (missing values follow the default
branch, as in XGBoost) and ``z_k`` the product of the path's cover fractions at those
tests. The leaf's share of the tree's value function is
``g_l(S) = v_l prod_{k in S} o_k prod_{k in P_l - S} z_k``, a game over ``P_l`` alone, and

    phi_i = sum_l v_l (o_i - z_i) C_l[i][A_l],
    C_l[i][A] = sum_{S subset of A - {i}} |S|! (D - |S| - 1)! / D! prod_{k in P_l - S - {i}} z_k,

where ``A_l`` is the set of path features whose tests the row passes (a coalition with a
failed test contributes nothing). ``C_l`` depends on the tree only, so it is tabulated once
per booster (paths are padded to the model's depth ``D`` with null players, which leave
every Shapley value unchanged) and premultiplied by ``v_l (o_i - z_i)``.

A leaf's mask ``A_l`` is a function of the row's outcomes at the tests on the leaf's path,
so the leaves of a subtree depend only on the tests from the root down to the subtree and
the subtree's own. Each tree is cut into such groups of at most ``GROUP_BITS`` tests (a
depth-4 tree into its four depth-2 subtrees, five tests each), and the leaf tables of a
group are summed by outcome once per booster: a row then costs one test per node and, per
group, one lookup that adds to each of the group's features (20 additions per depth-4 tree
instead of 16 leaves x 4 slots, two to three times faster than leaf by leaf). Compiled with
Numba; rows are explained in blocks of 64: every node's test once per block as a 64-bit row
mask, then group by group, so that a group's entries are read from cache for the whole block
(below ``FEW`` rows, row by row is faster).
The bias column is XGBoost's own (its base margin plus every tree's cover-weighted mean).

:func:`approx_explainer` gives XGBoost's approximate values (``approx_contribs=True``,
Saabas): a walk down each tree like a prediction, crediting each split's feature with the
change of the cover-weighted mean value (about 0.6-0.7 times the exact values' cost).

Both check their values against XGBoost's on probe rows when they are built and return None
(use XGBoost) for boosters they do not cover: categorical splits, several outputs, and for
the exact values trees deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from training.models import native
from training.models.forest import (
    BLOCK,
    Forest,
    PerBooster,
    block_combos,
    block_scratch,
    block_tests,
    cut_groups,
    distinct_tests,
    float32_rows,
    forest_trees,
    probe_rows,
)

__all__ = ["MAX_DEPTH", "PathExplainer", "TreeExplainer", "approx_explainer", "explainer"]

# The leaf tables built on the way hold 2^D entries per (leaf, feature slot): 9216 leaves x 6
# x 64 at depth 6 (28 MB while a booster's explainer is built; the groups' sums are smaller).
MAX_DEPTH = 6
# Values agree with XGBoost's (float32 arithmetic) to this, relative to the row's largest.
TOLERANCE = 1e-4
# Boosters whose tables are kept (a service holds one churn booster; tuning makes many).
CACHED = 8
# Rows are explained in blocks of forest.BLOCK (numba prange over blocks). Fewer than
# native.SMALL rows (a service request) are explained on the calling thread.
# Tests that index one group's table (2^GROUP_BITS entries per feature it adds to).
GROUP_BITS = 6
# Below this many rows, row by row (a block's per-leaf set-up costs more than it saves).
FEW = 6


@dataclass(frozen=True)
class TreeExplainer:
    """The tables of one booster; :meth:`contributions` is ``pred_contribs=True``."""

    node_feature: np.ndarray  # (N,) int64, every distinct test of the trees' internal nodes
    node_threshold: np.ndarray  # (N,) float32: left when x < threshold
    node_default_left: np.ndarray  # (N,) bool: where a missing value goes
    group_nodes: np.ndarray  # (G, B) int64: the tests whose outcomes index a group, -1 padding
    group_bits: np.ndarray  # (G,) int64: how many
    group_features: np.ndarray  # (G, F) int64: the features a group's entries add to
    group_width: np.ndarray  # (G,) int64: how many
    group_offset: np.ndarray  # (G,) int64: where the group's (2^bits, width) entries start
    table: np.ndarray  # (sum of 2^bits x width,) float64: the groups' summed leaf tables
    features: int
    bias: float

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, features + 1) float64: each feature's contribution to the margin, bias last."""
        x = float32_rows(matrix, self.features)
        out = np.zeros((len(x), self.features + 1), dtype=np.float64)
        args = (
            x, self.node_feature, self.node_threshold, self.node_default_left, self.group_nodes,
            self.group_bits, self.group_features, self.group_width, self.group_offset,
            self.table, out,
        )  # fmt: skip
        if len(x) < FEW:
            _each(0, len(x), *args)
        elif len(x) < native.SMALL:
            _rows(0, len(x), *args)
        else:
            _blocks(*args)
        out[:, -1] = self.bias
        return out

    def splits(self) -> tuple[np.ndarray, np.ndarray]:
        """The feature and threshold of every split."""
        return self.node_feature, self.node_threshold


@dataclass(frozen=True)
class PathExplainer:
    """XGBoost's approximate contributions (``approx_contribs=True``, Saabas 2014): along the
    row's path in each tree, the split feature gets the change of the cover-weighted mean
    value from a node to the child the row goes to. The cost of a prediction."""

    trees: Forest
    gain: np.ndarray  # (N,) float64: a node's mean value less its parent's (0 at a root)
    bias: float

    @property
    def features(self) -> int:
        return self.trees.features

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, features + 1) float64, as ``pred_contribs=True, approx_contribs=True``."""
        x = float32_rows(matrix, self.features)
        out = np.zeros((len(x), self.features + 1), dtype=np.float64)
        t = self.trees
        args = (x, t.left, t.right, t.feature, t.value, t.default_left, t.roots, self.gain, out)
        if len(x) < native.SMALL:
            _paths(0, len(x), *args)
        else:
            _path_blocks(*args)
        out[:, -1] = self.bias
        return out

    def splits(self) -> tuple[np.ndarray, np.ndarray]:
        inner = self.trees.left >= 0
        return self.trees.feature[inner], self.trees.value[inner]


def _approx_checked(booster: Any) -> PathExplainer | None:
    model = json.loads(booster.save_raw("json"))["learner"]
    params = model["learner_model_param"]
    if int(params.get("num_class", "0")) > 1:
        return None
    trees = forest_trees(model)
    if trees is None:
        return None
    cover = np.concatenate(
        [t["sum_hessian"] for t in model["gradient_booster"]["model"]["trees"]]
    ).astype(np.float64)
    built = PathExplainer(trees, _gains(trees, cover), _bias(booster, trees.features, True))
    return built if _agrees(built, booster, approx=True) else None


approx_explainer = PerBooster(_approx_checked, CACHED)
approx_explainer.__doc__ = "The booster's approximate explainer, or None (use XGBoost's)."


def _gains(trees: Forest, cover: np.ndarray) -> np.ndarray:
    """Each node's cover-weighted mean leaf value less its parent's (XGBoost's
    FillNodeMeanValues, in float64)."""
    left, right, value = trees.left, trees.right, trees.value.astype(np.float64)
    mean = value.copy()
    order = list(trees.roots)
    for n in order:  # breadth first: a node after its parent
        if left[n] >= 0:
            order.extend((left[n], right[n]))
    for n in order[::-1]:  # children before their parent
        if left[n] >= 0:
            a, b = left[n], right[n]
            mean[n] = (mean[a] * cover[a] + mean[b] * cover[b]) / cover[n] if cover[n] else 0.0
    gain = np.zeros(len(left))
    inner = np.flatnonzero(left >= 0)
    gain[left[inner]] = mean[left[inner]] - mean[inner]
    gain[right[inner]] = mean[right[inner]] - mean[inner]
    return gain


def _checked(booster: Any) -> TreeExplainer | None:
    built = _build(booster)
    return built if built is not None and _agrees(built, booster) else None


explainer = PerBooster(_checked, CACHED)
explainer.__doc__ = "The booster's tables, or None where XGBoost's contributions must be used."


def _build(booster: Any) -> TreeExplainer | None:
    model = json.loads(booster.save_raw("json"))["learner"]
    params = model["learner_model_param"]
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) > 1:
        return None
    if model["gradient_booster"].get("name") != "gbtree":  # dart, gblinear: XGBoost's own
        return None
    trees = model["gradient_booster"]["model"].get("trees")
    if not trees or any(any(t["split_type"]) or t["categories"] for t in trees):
        return None
    paths: list[tuple[list[tuple[int, bool, int, float]], float]] = []
    groups: list[tuple[list[int], list[int]]] = []  # (nodes, leaves), as global indices
    features: list[int] = []
    thresholds: list[float] = []
    defaults: list[bool] = []
    offset = 0
    for tree in trees:
        internal = _internal_ids(tree)
        leaf_index = {}
        for leaf, path, value in _leaf_paths(tree):
            leaf_index[leaf] = len(paths)
            paths.append(([(internal[n] + offset, left, f, z) for n, left, f, z in path], value))
        for nodes, leaves in _tree_groups(tree):
            groups.append(([internal[n] + offset for n in nodes], [leaf_index[n] for n in leaves]))
        ids = sorted(internal, key=internal.__getitem__)
        features.extend(tree["split_indices"][n] for n in ids)
        thresholds.extend(tree["split_conditions"][n] for n in ids)
        defaults.extend(bool(tree["default_left"][n]) for n in ids)
        offset += len(ids)
    depth = max((len(p) for p, _ in paths), default=0)
    if depth > MAX_DEPTH or depth == 0:
        return None
    arrays = _path_arrays(paths, max(depth, 1))
    node_feature = np.asarray(features, dtype=np.int64)
    grouped = _group_tables(groups, arrays, node_feature)
    # Trees share tests (XGBoost's thresholds are histogram bin edges): each distinct
    # (feature, threshold, missing branch) is evaluated once per row, and groups index tests.
    test_of_node, feature, threshold, default_left = distinct_tests(features, thresholds, defaults)
    at = grouped["group_nodes"]
    grouped["group_nodes"] = np.where(at >= 0, test_of_node[at], -1)
    return TreeExplainer(
        node_feature=feature,
        node_threshold=threshold,
        node_default_left=default_left,
        **grouped,
        features=int(params["num_feature"]),
        bias=_bias(booster, int(params["num_feature"])),
    )


def _internal_ids(tree: dict[str, Any]) -> dict[int, int]:
    """Position of each internal node of a tree, in node-id order."""
    left = tree["left_children"]
    return {n: i for i, n in enumerate(n for n in range(len(left)) if left[n] != -1)}


def _leaf_paths(
    tree: dict[str, Any],
) -> list[tuple[int, list[tuple[int, bool, int, float]], float]]:
    """(leaf node, path, leaf value) per leaf; a path is (node, goes left, feature, cover
    fraction)."""
    left, right = tree["left_children"], tree["right_children"]
    cover, feature = tree["sum_hessian"], tree["split_indices"]
    out = []
    stack: list[tuple[int, list[tuple[int, bool, int, float]]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        if left[node] == -1:
            out.append((node, path, float(np.float32(tree["split_conditions"][node]))))
            continue
        for child, goes_left in ((left[node], True), (right[node], False)):
            fraction = cover[child] / cover[node] if cover[node] > 0 else 0.0
            stack.append((child, [*path, (node, goes_left, feature[node], fraction)]))
    return out


def _tree_groups(tree: dict[str, Any]) -> list[tuple[list[int], list[int]]]:
    """The tree cut into subtrees whose leaves' masks depend on at most ``GROUP_BITS`` tests
    (the path to the subtree and the subtree's own): (those internal nodes, its leaves) each."""
    return cut_groups(tree["left_children"], tree["right_children"], 0, GROUP_BITS)


def _group_tables(
    groups: list[tuple[list[int], list[int]]],
    arrays: dict[str, np.ndarray],
    node_feature: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each group's leaf tables summed by the outcome of its tests: entry ``[c, k]`` is what
    the group's leaves add to feature ``k`` for a row whose tests come out as the bits of
    ``c`` (bit ``b``: the row goes left at the group's node ``b``)."""
    table = _tables(arrays["slot_cover"], arrays["leaf_value"])
    path_node, path_left = arrays["path_node"], arrays["path_left"]
    path_slot, slot_feature = arrays["path_slot"], arrays["slot_feature"]
    depth = path_node.shape[1]
    count = len(groups)
    widest = max(len(nodes) for nodes, _ in groups)
    group_nodes = np.full((count, widest), -1, dtype=np.int64)
    group_features = np.full((count, widest), -1, dtype=np.int64)
    bits_of, width_of, offsets = (np.zeros(count, dtype=np.int64) for _ in range(3))
    parts, at = [], 0
    for g, (nodes, leaves) in enumerate(groups):
        position = {n: b for b, n in enumerate(nodes)}
        columns = {f: k for k, f in enumerate(dict.fromkeys(node_feature[nodes].tolist()))}
        combos = np.arange(2 ** len(nodes))
        summed = np.zeros((len(combos), len(columns)))
        for leaf in leaves:
            mask = np.full(len(combos), (1 << depth) - 1)
            for d in range(depth):
                n = path_node[leaf, d]
                if n < 0:
                    break
                goes_left = (combos >> position[n]) & 1 == 1
                mask[goes_left != path_left[leaf, d]] &= ~(1 << path_slot[leaf, d])
            for s in range(depth):
                f = slot_feature[leaf, s]
                if f < 0:
                    break
                summed[:, columns[f]] += table[leaf, mask, s]
        group_nodes[g, : len(nodes)] = nodes
        group_features[g, : len(columns)] = list(columns)
        bits_of[g], width_of[g], offsets[g] = len(nodes), len(columns), at
        parts.append(summed.ravel())
        at += summed.size
    return {
        "group_nodes": group_nodes,
        "group_bits": bits_of,
        "group_features": group_features[:, : max(width_of)],
        "group_width": width_of,
        "group_offset": offsets,
        "table": np.concatenate(parts),
    }


def _path_arrays(
    paths: list[tuple[list[tuple[int, bool, int, float]], float]], depth: int
) -> dict[str, np.ndarray]:
    count = len(paths)
    node = np.full((count, depth), -1, dtype=np.int64)
    left = np.zeros((count, depth), dtype=np.bool_)
    slot = np.zeros((count, depth), dtype=np.int64)
    slot_feature = np.full((count, depth), -1, dtype=np.int64)
    slot_cover = np.ones((count, depth), dtype=np.float64)
    value = np.empty(count, dtype=np.float64)
    for i, (path, leaf) in enumerate(paths):
        value[i] = leaf
        slots: dict[int, int] = {}
        for d, (n, goes_left, f, fraction) in enumerate(path):
            s = slots.setdefault(f, len(slots))
            node[i, d], left[i, d], slot[i, d] = n, goes_left, s
            slot_feature[i, s] = f
            slot_cover[i, s] *= fraction
    return {
        "path_node": node,
        "path_left": left,
        "path_slot": slot,
        "slot_feature": slot_feature,
        "slot_cover": slot_cover,
        "leaf_value": value,
    }


def _tables(z: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``v_l (o_i - z_i) C_l[i][A]`` for every leaf, mask ``A`` and slot ``i`` (see the module
    doc; ``o_i`` is bit ``i`` of ``A``), C by a subset-sum (zeta) transform of the
    Shapley-weighted coalition terms. A row reads one leaf's slots for its mask together."""
    leaves, depth = z.shape
    masks = np.arange(2**depth)
    bits = (masks[:, None] >> np.arange(depth)[None, :]) & 1  # (2^D, D)
    size = bits.sum(axis=1)
    weight = np.array(
        [math.factorial(s) * math.factorial(depth - s - 1) / math.factorial(depth)
         if s < depth else 0.0 for s in size]
    )  # fmt: skip
    table = np.empty((leaves, 2**depth, depth))
    for i in range(depth):
        outside = (bits == 0) & (np.arange(depth) != i)[None, :]  # k not in S, k != i
        factors = np.where(outside[None, :, :], z[:, None, :], 1.0).prod(axis=2)
        term = np.where(bits[:, i] == 0, weight, 0.0)[None, :] * factors
        cube = term.reshape((leaves,) + (2,) * depth)
        for axis in range(1, depth + 1):
            cube = np.cumsum(cube, axis=axis)
        o = bits[None, :, i] - z[:, i, None]  # (L, 2^D)
        table[:, :, i] = value[:, None] * o * cube.reshape(leaves, 2**depth)
    return table


def _bias(booster: Any, features: int, approx: bool = False) -> float:
    """XGBoost's bias column (the same for every row)."""
    import xgboost as xgb

    probe = xgb.DMatrix(np.full((1, features), np.nan, dtype=np.float32))
    return float(booster.predict(probe, pred_contribs=True, approx_contribs=approx)[0, -1])


def _agrees(built: TreeExplainer | PathExplainer, booster: Any, approx: bool = False) -> bool:
    """Our values equal XGBoost's on probe rows around the booster's own thresholds."""
    import xgboost as xgb

    probe = probe_rows(*built.splits(), built.features)
    expected = booster.predict(xgb.DMatrix(probe), pred_contribs=True, approx_contribs=approx)
    expected = expected.astype(np.float64)
    got = built.contributions(probe)
    scale = np.maximum(np.abs(expected).max(axis=1, keepdims=True), 1.0)
    return bool(np.all(np.abs(got - expected) <= TOLERANCE * scale))


@numba.njit(cache=True, nogil=True)
def _each(
    start: int, stop: int, x: np.ndarray, node_feature: np.ndarray, node_threshold: np.ndarray,
    node_default_left: np.ndarray, group_nodes: np.ndarray, group_bits: np.ndarray,
    group_features: np.ndarray, group_width: np.ndarray, group_offset: np.ndarray,
    table: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """Adds the contributions of rows ``start:stop`` of ``x`` to ``out``, row by row (for a
    few rows: no per-block set-up)."""
    nodes = node_feature.shape[0]
    left = np.empty(nodes, dtype=np.int64)
    for r in range(start, stop):
        for n in range(nodes):
            v = x[r, node_feature[n]]
            left[n] = (v < node_threshold[n]) | (node_default_left[n] & (v != v))
        for g in range(group_bits.shape[0]):
            c = 0
            for b in range(group_bits[g]):
                c |= left[group_nodes[g, b]] << b
            width = group_width[g]
            at = group_offset[g] + c * width
            for k in range(width):
                out[r, group_features[g, k]] += table[at + k]


@numba.njit(cache=True, nogil=True)
def _rows(
    start: int, stop: int, x: np.ndarray, node_feature: np.ndarray, node_threshold: np.ndarray,
    node_default_left: np.ndarray, group_nodes: np.ndarray, group_bits: np.ndarray,
    group_features: np.ndarray, group_width: np.ndarray, group_offset: np.ndarray,
    table: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """Adds the contributions of rows ``start:stop`` of ``x`` to ``out`` (one thread), in
    blocks of up to 64 rows: each node's test as one bit per row, then group by group (so a
    group's entries stay in cache for the block)."""
    goes_left, combo, block = block_scratch(x.shape[1], node_feature.shape[0])
    sums = np.empty((out.shape[1], BLOCK), dtype=np.float64)  # the block's, feature-major
    for first in range(start, stop, BLOCK):
        rows = min(BLOCK, stop - first)
        block_tests(x, first, rows, block, node_feature, node_threshold, node_default_left,
                    goes_left)  # fmt: skip
        sums[:, :rows] = 0.0
        for g in range(group_bits.shape[0]):
            block_combos(goes_left, group_nodes[g], group_bits[g], rows, combo)
            width, offset = group_width[g], group_offset[g]
            for k in range(width):
                into = sums[group_features[g, k]]
                at = offset + k
                for j in range(rows):
                    into[j] += table[at + combo[j] * width]
        for j in range(rows):
            for f in range(out.shape[1]):
                out[first + j, f] += sums[f, j]


@numba.njit(cache=True, nogil=True, parallel=True)
def _blocks(
    x: np.ndarray, node_feature: np.ndarray, node_threshold: np.ndarray,
    node_default_left: np.ndarray, group_nodes: np.ndarray, group_bits: np.ndarray,
    group_features: np.ndarray, group_width: np.ndarray, group_offset: np.ndarray,
    table: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """:func:`_rows` over blocks of ``BLOCK`` rows on every core."""
    rows = x.shape[0]
    blocks = (rows + BLOCK - 1) // BLOCK
    for b in numba.prange(blocks):
        _rows(
            b * BLOCK, min(rows, (b + 1) * BLOCK), x, node_feature, node_threshold,
            node_default_left, group_nodes, group_bits, group_features, group_width,
            group_offset, table, out,
        )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _paths(
    start: int, stop: int, x: np.ndarray, left: np.ndarray, right: np.ndarray,
    feature: np.ndarray, value: np.ndarray, default_left: np.ndarray, roots: np.ndarray,
    gain: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """Adds the approximate contributions of rows ``start:stop`` to ``out`` (one thread)."""
    for r in range(start, stop):
        for t in range(roots.shape[0]):
            n = roots[t]
            while left[n] >= 0:
                f = feature[n]
                v = x[r, f]
                if np.isnan(v):
                    n = left[n] if default_left[n] else right[n]
                elif v < value[n]:
                    n = left[n]
                else:
                    n = right[n]
                out[r, f] += gain[n]


@numba.njit(cache=True, nogil=True, parallel=True)
def _path_blocks(
    x: np.ndarray, left: np.ndarray, right: np.ndarray, feature: np.ndarray, value: np.ndarray,
    default_left: np.ndarray, roots: np.ndarray, gain: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """:func:`_paths` over blocks of ``BLOCK`` rows on every core."""
    rows = x.shape[0]
    blocks = (rows + BLOCK - 1) // BLOCK
    for b in numba.prange(blocks):
        _paths(
            b * BLOCK, min(rows, (b + 1) * BLOCK), x, left, right, feature, value,
            default_left, roots, gain, out,
        )  # fmt: skip
