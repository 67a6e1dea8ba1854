"""Evaluation metrics for the churn, next-stage and CLV models: pure functions over arrays.

Nothing here logs or draws: the training pipeline logs the returned dicts to MLflow and
``training.plots`` draws the figures. Every metric dict maps a snake_case name to a plain
``float``.

Ties never make a result depend on row order. Wherever customers are ranked by a score
(normalized Gini, deciles, lift), the actual values of customers with tied scores are replaced
by the mean over their tie group: the expected value over every way of breaking the tie.
Without ties this changes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from sklearn import metrics as sk_metrics

__all__ = [
    "DECILES",
    "PROBABILITY_CLIP",
    "beats",
    "binary_metrics",
    "confusion_matrix",
    "decile_table",
    "improvement",
    "lift_table",
    "multiclass_metrics",
    "ranked_groups",
    "ranking_metrics",
    "value_metrics",
]

PROBABILITY_CLIP = 1e-7
DECILES = 10
# Softmax rows from a float32 booster sum to 1 within ~1e-6; anything further off is a bug.
_ROW_SUM_TOLERANCE = 1e-4
# Metric differences this small are rounding noise (0.81 - 0.80 must clear a 0.01 gate).
_COMPARISON_TOLERANCE = 1e-12

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]


def _finite_vector(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {array[bad[0]]}: values must be finite")
    return array


def _same_length(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    if len(first) != len(second):
        raise ValueError(f"{names[0]} has {len(first)} rows but {names[1]} has {len(second)}")
    if len(first) == 0:
        raise ValueError(f"{names[0]} is empty: there is nothing to evaluate")


def _binary_labels(y_true: npt.ArrayLike) -> FloatArray:
    labels = _finite_vector(y_true, "y_true")
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise ValueError(f"y_true[{bad[0]}] is {labels[bad[0]]}: binary labels must be 0 or 1")
    return labels


def _probabilities(values: npt.ArrayLike, name: str) -> FloatArray:
    probability = _finite_vector(values, name)
    bad = np.flatnonzero((probability < 0) | (probability > 1))
    if bad.size:
        raise ValueError(
            f"{name}[{bad[0]}] is {probability[bad[0]]}: probabilities must lie in [0, 1]"
        )
    return probability


def _both_classes(labels: FloatArray) -> None:
    if labels.min() == labels.max():
        raise ValueError(
            f"labels have a single class (all {int(labels[0])}): AUC is undefined; evaluate "
            "on rows that hold both classes (e.g. a longer or later label window)"
        )


def ranking_metrics(y_true: npt.ArrayLike, score: npt.ArrayLike) -> dict[str, float]:
    """ROC AUC and average precision of any score where higher means "more likely positive".

    Unlike :func:`binary_metrics` the score need not be a probability, so baselines such as
    "days since last purchase" can be compared on the same footing.
    """
    labels = _binary_labels(y_true)
    ranked = _finite_vector(score, "score")
    _same_length(labels, ranked, ("y_true", "score"))
    _both_classes(labels)
    return {
        "auc": float(sk_metrics.roc_auc_score(labels, ranked)),
        "average_precision": float(sk_metrics.average_precision_score(labels, ranked)),
    }


def binary_metrics(y_true: npt.ArrayLike, probability: npt.ArrayLike) -> dict[str, float]:
    """Discrimination and calibration of predicted probabilities for 0/1 labels.

    Returns ``auc``, ``log_loss`` (probabilities clipped to ``[1e-7, 1 - 1e-7]`` so one
    confident miss is large but finite), ``brier`` (mean squared error of the probability,
    Brier 1950), ``average_precision``, ``base_rate`` and ``mean_probability``.

    Raises
    ------
    ValueError
        If lengths differ, a label is not 0/1, a probability is outside ``[0, 1]`` or not
        finite (the message names the first bad index), or the labels have a single class.
    """
    labels = _binary_labels(y_true)
    probs = _probabilities(probability, "probability")
    _same_length(labels, probs, ("y_true", "probability"))
    ranking = ranking_metrics(labels, probs)
    clipped = np.clip(probs, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    log_loss = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped))
    return {
        "auc": ranking["auc"],
        "log_loss": float(log_loss),
        "brier": float(np.mean((probs - labels) ** 2)),
        "average_precision": ranking["average_precision"],
        "base_rate": float(labels.mean()),
        "mean_probability": float(probs.mean()),
    }


def _metric_suffix(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _class_names(classes: Sequence[str]) -> list[str]:
    names = [str(c) for c in classes]
    if len(names) < 2:
        raise ValueError(f"classes must name at least two classes, got {names}")
    suffixes = [_metric_suffix(c) for c in names]
    clashes = sorted({c for c, s in zip(names, suffixes, strict=True) if suffixes.count(s) > 1})
    if clashes or "" in suffixes:
        raise ValueError(
            f"classes {clashes or names} repeat or have no letters once snake_cased "
            f"({suffixes}): each class needs its own recall_<class> metric name"
        )
    return names


def _class_indices(labels: npt.ArrayLike, names: list[str], name: str) -> IndexArray:
    values = np.asarray(labels).astype(str)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
    codes = np.asarray(pd.Index(names).get_indexer(pd.Index(values)), dtype=np.intp)
    unknown = sorted({str(v) for v in values[codes < 0]})
    if unknown:
        raise ValueError(f"{name} holds labels absent from classes: {unknown} (classes: {names})")
    return codes


def _probability_matrix(probabilities: npt.ArrayLike, rows: int, columns: int) -> FloatArray:
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.shape != (rows, columns):
        raise ValueError(
            f"probabilities have shape {matrix.shape}, expected ({rows}, {columns}): "
            "one row per label, one column per class in `classes` order"
        )
    bad = np.argwhere(~np.isfinite(matrix) | (matrix < 0) | (matrix > 1))
    if bad.size:
        row, column = bad[0]
        raise ValueError(
            f"probabilities[{row}, {column}] is {matrix[row, column]}: "
            "probabilities must be finite and lie in [0, 1]"
        )
    sums = matrix.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > _ROW_SUM_TOLERANCE)
    if off.size:
        raise ValueError(f"probabilities row {off[0]} sums to {sums[off[0]]:.6g}, not 1")
    return matrix


def _confusion_counts(truth: IndexArray, predicted: IndexArray, k: int) -> npt.NDArray[np.int64]:
    flat = np.bincount(truth * k + predicted, minlength=k * k)
    return flat.reshape(k, k).astype(np.int64)


def _macro_f1(counts: npt.NDArray[np.int64]) -> float:
    true_rows, predicted_rows = counts.sum(axis=1), counts.sum(axis=0)
    seen = (true_rows + predicted_rows) > 0
    f1 = 2 * np.diag(counts)[seen] / (true_rows + predicted_rows)[seen]
    return float(f1.mean())


def confusion_matrix(
    y_true: npt.ArrayLike, predicted: npt.ArrayLike, classes: Sequence[str]
) -> npt.NDArray[np.int64]:
    """Counts of (true class, predicted class): rows true, columns predicted, in ``classes`` order.

    Raises ``ValueError`` naming any label absent from ``classes``.
    """
    names = _class_names(classes)
    truth = _class_indices(y_true, names, "y_true")
    guess = _class_indices(predicted, names, "predicted")
    _same_length(truth, guess, ("y_true", "predicted"))
    return _confusion_counts(truth, guess, len(names))


def multiclass_metrics(
    y_true: npt.ArrayLike, probabilities: npt.ArrayLike, classes: Sequence[str]
) -> dict[str, float]:
    """Log loss, macro F1, accuracy and per-class recall of class probabilities.

    ``probabilities`` is ``(n, k)`` with columns in ``classes`` order and rows summing to 1.
    ``log_loss`` is the mean of ``-log p(true class)`` with ``p`` clipped below at 1e-7.
    Predictions are the argmax (the first class on a tie). ``macro_f1`` averages
    ``F1 = 2 TP / (true rows + predicted rows)`` over the classes present in ``y_true`` or in
    the predictions: a class neither seen nor predicted has an undefined F1 and is left out
    rather than counted as 0 or 1; a class predicted but never true counts as 0.
    ``recall_<class>`` (class name snake_cased) is NaN when the class has no true rows.
    """
    names = _class_names(classes)
    truth = _class_indices(y_true, names, "y_true")
    if truth.size == 0:
        raise ValueError("y_true is empty: there is nothing to evaluate")
    matrix = _probability_matrix(probabilities, len(truth), len(names))
    counts = _confusion_counts(truth, matrix.argmax(axis=1), len(names))
    true_class_probability = np.clip(matrix[np.arange(len(truth)), truth], PROBABILITY_CLIP, 1)
    result = {
        "log_loss": float(-np.mean(np.log(true_class_probability))),
        "macro_f1": _macro_f1(counts),
        "accuracy": float(np.trace(counts) / counts.sum()),
    }
    true_rows = counts.sum(axis=1)
    for i, name in enumerate(names):
        recall = counts[i, i] / true_rows[i] if true_rows[i] else math.nan
        result[f"recall_{_metric_suffix(name)}"] = float(recall)
    return result


def _tie_averaged_ranking(actual: FloatArray, score: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Actual values and scores sorted by score, highest first, actuals averaged over ties."""
    order = np.argsort(-score, kind="stable")
    ranked_score, ranked_actual = score[order], actual[order]
    starts = np.flatnonzero(np.r_[True, ranked_score[1:] != ranked_score[:-1]])
    sizes = np.diff(np.r_[starts, len(ranked_score)])
    means = np.add.reduceat(ranked_actual, starts) / sizes
    return np.repeat(means, sizes), ranked_score


def ranked_groups(y_true: npt.ArrayLike, score: npt.ArrayLike, *, groups: int) -> pd.DataFrame:
    """Rows ranked by ``score`` (highest first) cut into ``groups`` equal-count groups.

    Sizes differ by at most one, the larger groups first (``numpy.array_split``). Columns:
    ``group`` (1 = highest score), ``count``, ``mean_score``, ``mean_actual``, ``sum_actual``;
    actual values are tie-averaged (see the module docstring), so no column depends on row
    order. Deciles, lift tables and quantile-binned reliability diagrams are built on this.
    """
    actual = _finite_vector(y_true, "y_true")
    scores = _finite_vector(score, "score")
    _same_length(actual, scores, ("y_true", "score"))
    if not 1 <= groups <= len(actual):
        raise ValueError(
            f"y_true has {len(actual)} rows: {groups} equal-count groups need at least {groups}"
        )
    averaged, ranked_score = _tie_averaged_ranking(actual, scores)
    parts = np.array_split(np.arange(len(actual)), groups)
    return pd.DataFrame(
        {
            "group": np.arange(1, groups + 1),
            "count": [len(p) for p in parts],
            "mean_score": [ranked_score[p].mean() for p in parts],
            "mean_actual": [averaged[p].mean() for p in parts],
            "sum_actual": [averaged[p].sum() for p in parts],
        }
    )


def decile_table(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> pd.DataFrame:
    """Customers in 10 equal-count groups by prediction: the CLV decile chart of Wang et al.

    Columns: ``decile`` (1 = highest prediction), ``count``, ``mean_predicted``,
    ``mean_actual`` and ``share_of_actual`` (the decile's share of the total actual value;
    NaN when the total is 0). Needs at least 10 rows.

    References
    ----------
    Wang, X., Liu, T. & Miao, J. (2019). A Deep Probabilistic Model for Customer Lifetime
    Value Prediction. arXiv:1912.07753 (decile charts).
    """
    actual = _finite_vector(y_true, "y_true")
    predicted = _finite_vector(y_pred, "y_pred")
    _same_length(actual, predicted, ("y_true", "y_pred"))
    table = ranked_groups(actual, predicted, groups=DECILES)
    table.columns = pd.Index(["decile", "count", "mean_predicted", "mean_actual", "sum_actual"])
    total = float(table["sum_actual"].sum())
    table["share_of_actual"] = table.pop("sum_actual") / total if total != 0 else math.nan
    return table


def lift_table(y_true: npt.ArrayLike, probability: npt.ArrayLike) -> pd.DataFrame:
    """Lift and cumulative gain by decile of a binary score (only its order matters).

    Columns: ``decile`` (1 = highest score), ``count``, ``positives`` (expected count under
    random tie-breaking, a whole number when no tie straddles a decile boundary), ``rate``,
    ``lift`` (rate / base rate) and ``cumulative_gain`` (share of all positives in deciles
    1..d). A perfect ranking has decile-1 lift ``min(10, 1 / base_rate)``.
    """
    labels = _binary_labels(y_true)
    scores = _finite_vector(probability, "probability")
    _same_length(labels, scores, ("y_true", "probability"))
    if labels.max() == 0:
        raise ValueError("labels have no positives (all 0): lift and gain are undefined")
    table = ranked_groups(labels, scores, groups=DECILES)
    table.columns = pd.Index(["decile", "count", "mean_score", "rate", "positives"])
    table["lift"] = table["rate"] / labels.mean()
    table["cumulative_gain"] = table["positives"].cumsum() / labels.sum()
    return table[["decile", "count", "positives", "rate", "lift", "cumulative_gain"]]


def _normalized_gini(actual: FloatArray, predicted: FloatArray) -> float:
    # Trapezoid area between the Lorenz curve and the diagonal, times n * total / 2:
    # sum_j actual_j * ((n + 1) / 2 - rank_j). The total cancels in the ratio.
    if actual.min() == actual.max():
        raise ValueError(
            f"y_true is constant ({actual[0]}): the normalized Gini is undefined; "
            "evaluate on customers whose actual values differ"
        )
    weights = (len(actual) + 1) / 2 - np.arange(1, len(actual) + 1)
    perfect = float(weights @ _tie_averaged_ranking(actual, actual)[0])
    return float(weights @ _tie_averaged_ranking(actual, predicted)[0]) / perfect


def _decile_calibration_error(deciles: pd.DataFrame) -> float:
    actual = deciles["mean_actual"].to_numpy(dtype=np.float64)
    error = np.abs(deciles["mean_predicted"].to_numpy(dtype=np.float64) - actual)
    zero = actual == 0
    relative = np.divide(error, np.abs(actual), out=np.zeros_like(error), where=~zero)
    kept = ~zero | (error == 0)
    return float(relative[kept].mean()) if kept.any() else math.nan


def _decile_total_error(deciles: pd.DataFrame) -> float:
    counts = deciles["count"].to_numpy(dtype=np.float64)
    actual = deciles["mean_actual"].to_numpy(dtype=np.float64) * counts
    predicted = deciles["mean_predicted"].to_numpy(dtype=np.float64) * counts
    total = float(actual.sum())
    return float(np.abs(predicted - actual).sum()) / total if total > 0 else math.nan


def value_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """Error, ranking and calibration of predicted customer value (CLV, spend).

    * ``mae``, ``rmse``, ``mean_actual``, ``mean_predicted``.
    * ``normalized_gini``: the Gini of the actual values ordered by prediction divided by the
      Gini of the perfect ordering (Wang, Liu & Miao 2019): 1 is perfect, about 0
      random, -1 reversed. Each Gini is twice the area between the cumulative-value (Lorenz)
      curve and the diagonal, by the trapezoid rule, so a random order has expectation
      exactly 0. Tied predictions are tie-averaged (module docstring).
    * ``spearman``: rank correlation (``scipy.stats.spearmanr``); NaN for a constant prediction.
    * ``top_decile_capture``: share of the total actual value held by the top decile of
      predictions (``ceil(n / 10)`` customers; NaN when the total is 0).
    * ``decile_calibration_error``: Wang et al.'s decile-level MAPE, the mean over the 10
      prediction deciles of ``|mean_predicted - mean_actual| / |mean_actual|``. A decile with
      ``mean_actual == 0`` counts 0 when its mean prediction is 0 too and is otherwise left
      out (its relative error is infinite; read it in :func:`decile_table`); NaN if none is left.
      A decile whose actual mean is near 0 outweighs the others: see the next one.
    * ``decile_total_error``: each decile's error in total value, ``count x |mean_predicted -
      mean_actual|``, summed over the deciles and divided by the total actual value (0 is
      calibrated per decile; each decile counts by the value it holds); NaN for a total <= 0.

    Raises ``ValueError`` for mismatched lengths, non-finite values, fewer than 10 rows or a
    constant ``y_true``.

    References
    ----------
    Wang, X., Liu, T. & Miao, J. (2019). A Deep Probabilistic Model for Customer Lifetime
    Value Prediction. arXiv:1912.07753.
    """
    actual = _finite_vector(y_true, "y_true")
    predicted = _finite_vector(y_pred, "y_pred")
    deciles = decile_table(actual, predicted)
    error = predicted - actual
    constant = predicted.min() == predicted.max()
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "normalized_gini": _normalized_gini(actual, predicted),
        "spearman": math.nan if constant else float(stats.spearmanr(actual, predicted)[0]),
        "top_decile_capture": float(deciles["share_of_actual"].iloc[0]),
        "decile_calibration_error": _decile_calibration_error(deciles),
        "decile_total_error": _decile_total_error(deciles),
        "mean_actual": float(actual.mean()),
        "mean_predicted": float(predicted.mean()),
    }


def improvement(
    candidate: Mapping[str, float],
    reference: Mapping[str, float],
    metric: str,
    *,
    greater_is_better: bool,
) -> float:
    """Signed improvement of ``candidate`` over ``reference`` on ``metric`` (positive = better).

    Raises ``KeyError`` naming the metric and the dict that lacks it, and ``ValueError`` for a
    non-finite value (a NaN metric must not pass or fail a gate silently).
    """
    values = []
    for role, scores in (("candidate", candidate), ("reference", reference)):
        if metric not in scores:
            raise KeyError(f"metric {metric!r} missing from the {role} metrics {sorted(scores)}")
        value = float(scores[metric])
        if not math.isfinite(value):
            raise ValueError(f"{role} {metric} is {value}: cannot compare a non-finite metric")
        values.append(value)
    gain = values[0] - values[1]
    return gain if greater_is_better else -gain


def beats(
    candidate: Mapping[str, float],
    reference: Mapping[str, float],
    metric: str,
    *,
    greater_is_better: bool,
    min_improvement: float,
) -> bool:
    """Promotion gate: ``candidate`` is strictly better by at least ``min_improvement``.

    Differences within 1e-12 count as equal, so an improvement of exactly
    ``min_improvement`` passes despite float rounding and a tie never passes.
    """
    if not min_improvement >= 0:
        raise ValueError(f"min_improvement is {min_improvement}: it must be 0 or more")
    gain = improvement(candidate, reference, metric, greater_is_better=greater_is_better)
    return gain > _COMPARISON_TOLERANCE and gain >= min_improvement - _COMPARISON_TOLERANCE
