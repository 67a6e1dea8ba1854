"""Evaluation figures: ROC / PR, calibration, lift and gain, SHAP summary, confusion, CLV deciles.

Every function returns a :class:`matplotlib.figure.Figure` built directly (no ``pyplot``), so
importing or calling this module changes no global state and needs no display; the caller
saves or logs the figure. Numbers come from :mod:`training.evaluate`, which also validates the
inputs. Each axis label says what to read off it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from scipy import stats
from sklearn import metrics as sk_metrics

from training import evaluate

__all__ = [
    "calibration_figure",
    "clv_decile_figure",
    "confusion_figure",
    "lift_gain_figure",
    "roc_pr_figure",
    "shap_summary_figure",
    "transition_heatmap_figure",
]

Scores = Mapping[str, npt.ArrayLike]
_ROW_SUM_TOLERANCE = 1e-6
# Small see-through dots; a missing feature value (NaN shade) is drawn in the "bad" colour.
_DOT_STYLE: dict[str, Any] = {
    "s": 8,
    "alpha": 0.8,
    "linewidths": 0,
    "plotnonfinite": True,
    "rasterized": True,
}


def _colours(count: int) -> list[tuple[float, float, float, float]]:
    palette = mpl.colormaps["tab10"]
    return [palette(i % 10) for i in range(count)]


def _require_series(series: Scores, name: str) -> None:
    if not series:
        raise ValueError(f"{name} is empty: pass at least one model or baseline by name")


def _side_by_side(title: str) -> tuple[Figure, Axes, Axes]:
    figure = Figure(figsize=(12, 5), layout="constrained")
    left, right = figure.subplots(1, 2)
    figure.suptitle(title)
    return figure, left, right


def roc_pr_figure(y_true: npt.ArrayLike, scores: Scores, *, positive: str = "churners") -> Figure:
    """ROC (left) and precision-recall (right) curves, one per model or baseline.

    ``scores`` maps a name to any score where higher means "more likely positive"; the legend
    gives each curve's ROC AUC or average precision.
    """
    _require_series(scores, "scores")
    labels = np.asarray(y_true, dtype=np.float64)
    figure, roc, pr = _side_by_side(f"Ranking quality: how well each score separates {positive}")
    for (name, score), colour in zip(scores.items(), _colours(len(scores)), strict=True):
        summary = evaluate.ranking_metrics(labels, score)
        fpr, tpr, _ = sk_metrics.roc_curve(labels, score)
        precision, recall, _ = sk_metrics.precision_recall_curve(labels, score)
        roc.plot(fpr, tpr, color=colour, label=f"{name} (AUC {summary['auc']:.3f})")
        ap = summary["average_precision"]
        pr.step(recall, precision, where="post", color=colour, label=f"{name} (AP {ap:.3f})")
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random (AUC 0.5)")
    pr.axhline(labels.mean(), color="grey", linestyle=":", label="random (base rate)")
    roc.set(title="ROC curve", xlabel="False positive rate (share of others flagged)")
    roc.set_ylabel(f"True positive rate (share of {positive} flagged)")
    pr.set(title="Precision-recall curve", xlabel=f"Recall (share of {positive} flagged)")
    pr.set_ylabel(f"Precision (share of flagged who are {positive})")
    for axes in (roc, pr):
        axes.set(xlim=(0, 1), ylim=(0, 1.02))
        axes.legend(loc="lower right" if axes is roc else "upper right")
    return figure


def calibration_figure(
    y_true: npt.ArrayLike, probabilities: Scores, bins: int = 10, *, positive: str = "churners"
) -> Figure:
    """Reliability diagram over quantile bins (left) and the spread of the predictions (right).

    Each model's rows are cut into ``bins`` equal-count groups by predicted probability; a
    point is the group's mean prediction against its observed positive rate, so a
    well-calibrated model lies on the diagonal. The legend gives the Brier score.
    """
    _require_series(probabilities, "probabilities")
    figure, reliability, spread = _side_by_side(
        "Calibration: do predicted probabilities come true?"
    )
    edges = np.linspace(0, 1, 41).tolist()
    for (name, probability), colour in zip(
        probabilities.items(), _colours(len(probabilities)), strict=True
    ):
        brier = evaluate.binary_metrics(y_true, probability)["brier"]
        groups = evaluate.ranked_groups(y_true, probability, groups=bins)
        reliability.plot(
            groups["mean_score"],
            groups["mean_actual"],
            "o-",
            color=colour,
            label=f"{name} (Brier {brier:.4f})",
        )
        spread.hist(np.asarray(probability), bins=edges, histtype="step", color=colour, label=name)
    reliability.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    reliability.set(title=f"Reliability diagram ({bins} quantile bins)", xlim=(0, 1), ylim=(0, 1))
    reliability.set_xlabel("Mean predicted probability in the bin")
    reliability.set_ylabel(f"Observed share of {positive} in the bin")
    spread.set(title="Distribution of predicted probabilities", xlim=(0, 1))
    spread.set(xlabel="Predicted probability", ylabel="Customers")
    reliability.legend(loc="upper left")
    spread.legend(loc="upper right")
    return figure


def lift_gain_figure(
    y_true: npt.ArrayLike, scores: Scores, *, positive: str = "churners"
) -> Figure:
    """Lift by score decile (bars, left) and the cumulative gain curve (right).

    Lift is a decile's positive rate over the overall rate; the gain curve shows the share of
    all positives found when targeting customers from the highest score down.
    """
    _require_series(scores, "scores")
    labels = np.asarray(y_true, dtype=np.float64)
    figure, lift, gain = _side_by_side(f"Targeting: {positive} found by contacting the top deciles")
    width = 0.8 / len(scores)
    for i, ((name, score), colour) in enumerate(
        zip(scores.items(), _colours(len(scores)), strict=True)
    ):
        table = evaluate.lift_table(labels, score)
        offsets = table["decile"] - 0.4 + width * (i + 0.5)
        lift.bar(offsets, table["lift"], width=width, color=colour, label=name)
        targeted = np.r_[0, table["decile"] / evaluate.DECILES]
        gain.plot(targeted, np.r_[0, table["cumulative_gain"]], "o-", color=colour, label=name)
    base_rate = labels.mean()
    lift.axhline(1, color="grey", linestyle=":", label="random (lift 1)")
    gain.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    gain.plot([0, min(base_rate, 1), 1], [0, 1, 1], color="black", linestyle="--", label="perfect")
    lift.set(title="Lift by decile", xticks=range(1, evaluate.DECILES + 1))
    lift.set_xlabel("Decile of the score (1 = highest)")
    lift.set_ylabel(f"Lift ({positive} rate in decile / overall rate)")
    gain.set(title="Cumulative gain", xlim=(0, 1), ylim=(0, 1.02))
    gain.set_xlabel("Share of customers targeted (highest score first)")
    gain.set_ylabel(f"Share of {positive} captured")
    lift.legend(loc="upper right")
    gain.legend(loc="lower right")
    return figure


def _shap_inputs(
    contributions: npt.ArrayLike, feature_names: Sequence[str], values: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[str]]:
    names = [str(n) for n in feature_names]
    contrib = np.asarray(contributions, dtype=np.float64)
    features = np.asarray(values, dtype=np.float64)
    if contrib.ndim != 2 or contrib.shape[1] != len(names) + 1 or len(contrib) == 0:
        raise ValueError(
            f"contributions have shape {contrib.shape}, expected (n >= 1, {len(names) + 1}): "
            "one column per feature name plus the bias last (XGBoost pred_contribs=True)"
        )
    if features.shape != (len(contrib), len(names)):
        raise ValueError(
            f"values have shape {features.shape}, expected {(len(contrib), len(names))}: "
            "the feature values the contributions were computed on"
        )
    bad = np.argwhere(~np.isfinite(contrib))
    if bad.size:
        row, column = bad[0]
        raise ValueError(f"contributions[{row}, {column}] is {contrib[row, column]}: not finite")
    return contrib[:, :-1], features, names


def _value_rank(column: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Feature values as ranks scaled to [0, 1] (ties averaged); NaN stays NaN (missing)."""
    scaled = np.full(len(column), np.nan)
    known = np.isfinite(column)
    ranks = stats.rankdata(column[known])
    scaled[known] = (ranks - 1) / (len(ranks) - 1) if len(ranks) > 1 else 0.5
    return scaled


def _swarm_offsets(
    x: npt.NDArray[np.float64], rng: np.random.Generator, half_width: float = 0.4
) -> npt.NDArray[np.float64]:
    """Vertical jitter proportional to how crowded each point's x-bin is (a cheap beeswarm)."""
    counts, edges = np.histogram(x, bins=40)
    crowding = counts[np.clip(np.digitize(x, edges[1:-1]), 0, len(counts) - 1)] / counts.max()
    return rng.uniform(-half_width, half_width, len(x)) * crowding


def shap_summary_figure(
    contributions: npt.ArrayLike,
    feature_names: Sequence[str],
    values: npt.ArrayLike,
    max_features: int = 20,
    *,
    max_rows: int = 5000,
    seed: int = 0,
) -> Figure:
    """Beeswarm-style SHAP summary from XGBoost ``pred_contribs`` (matplotlib only).

    ``contributions`` is ``(n, n_features + 1)`` with the bias last (it is not drawn);
    ``values`` are the ``(n, n_features)`` feature values. Features are ordered by mean
    |contribution| over all rows, the top ``max_features`` drawn, most important on top; at
    most ``max_rows`` rows (a seeded sample) are drawn. Colour is the feature value's rank
    within its feature, grey where missing. For a multi-class booster pass one class's
    ``(n, n_features + 1)`` slice.

    References
    ----------
    Lundberg, S. M. et al. (2020). From local explanations to global understanding with
    explainable AI for trees. Nature Machine Intelligence 2, 56-67 (the summary plot).
    """
    contrib, features, names = _shap_inputs(contributions, feature_names, values)
    if max_features < 1 or max_rows < 1:
        raise ValueError(f"max_features ({max_features}) and max_rows ({max_rows}) must be >= 1")
    top = np.argsort(-np.abs(contrib).mean(axis=0), kind="stable")[:max_features][::-1]
    rng = np.random.default_rng(seed)
    rows = np.arange(len(contrib))
    if len(rows) > max_rows:
        rows = np.sort(rng.choice(rows, size=max_rows, replace=False))
    colours = mpl.colormaps["coolwarm"].with_extremes(bad="lightgrey")
    figure = Figure(figsize=(9, 1.6 + 0.35 * len(top)), layout="constrained")
    axes = figure.add_subplot()
    for position, feature in enumerate(top):
        x, shade = contrib[rows, feature], _value_rank(features[rows, feature])
        y = position + _swarm_offsets(x, rng)
        axes.scatter(x, y, c=shade, cmap=colours, norm=Normalize(0, 1), **_DOT_STYLE)
    axes.axvline(0, color="grey", linewidth=0.8)
    axes.set_yticks(range(len(top)), [names[i] for i in top])
    axes.set(title="What drives the predictions (features by mean |SHAP value|)")
    axes.set_xlabel("SHAP value: contribution to the model margin (log-odds for a classifier)")
    axes.set_ylabel("Feature (most influential on top)")
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), colours), ax=axes, ticks=[0, 1])
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("Feature value (rank within the feature; grey = missing)")
    return figure


def _square(matrix: npt.ArrayLike, classes: Sequence[str]) -> npt.NDArray[np.float64]:
    values = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    if values.shape != (k, k):
        raise ValueError(
            f"matrix has shape {values.shape}, expected ({k}, {k}): one row and one column "
            f"per class in {list(classes)}"
        )
    bad = np.argwhere(~np.isfinite(values) | (values < 0))
    if bad.size:
        row, column = bad[0]
        raise ValueError(f"matrix[{row}, {column}] is {values[row, column]}: must be finite, >= 0")
    return values


def _heatmap(
    axes: Axes, shades: npt.NDArray[np.float64], texts: list[list[str]], classes: Sequence[str]
) -> ScalarMappable:
    image = axes.imshow(shades, cmap="Blues", vmin=0, vmax=1)
    for row, line in enumerate(texts):
        for column, text in enumerate(line):
            ink = "white" if shades[row, column] > 0.5 else "black"
            axes.text(column, row, text, ha="center", va="center", color=ink)
    axes.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    axes.set_yticks(range(len(classes)), list(classes))
    return image


def confusion_figure(matrix: npt.ArrayLike, classes: Sequence[str], title: str) -> Figure:
    """Confusion matrix: counts annotated, colour = share of the true class's rows.

    ``matrix`` is as from :func:`training.evaluate.confusion_matrix` (rows true, columns
    predicted), so the diagonal colour of a row is that class's recall.
    """
    counts = _square(matrix, classes)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = Figure(figsize=(7.5, 6), layout="constrained")
    axes = figure.add_subplot()
    image = _heatmap(axes, shares, [[f"{v:,.0f}" for v in row] for row in counts], classes)
    axes.set(title=title, xlabel="Predicted class", ylabel="True class")
    figure.colorbar(image, ax=axes, label="Share of the true class's rows (row recall)")
    return figure


def transition_heatmap_figure(matrix: npt.ArrayLike, classes: Sequence[str], title: str) -> Figure:
    """Row-stochastic transition matrix: cell (from, to) is P(next class = to | class = from).

    Each row must sum to 1, or to 0 for a class never observed at the start of a period.
    """
    probabilities = _square(matrix, classes)
    sums = probabilities.sum(axis=1)
    off = np.flatnonzero((np.abs(sums - 1) > _ROW_SUM_TOLERANCE) & (sums != 0))
    if off.size:
        raise ValueError(
            f"matrix row {off[0]} ({classes[off[0]]}) sums to {sums[off[0]]:.6g}: "
            "transition probabilities from one class must sum to 1"
        )
    figure = Figure(figsize=(7.5, 6), layout="constrained")
    axes = figure.add_subplot()
    texts = [[f"{p:.2f}" for p in row] for row in probabilities]
    image = _heatmap(axes, probabilities, texts, classes)
    axes.set(title=title, xlabel="To: class at the next cutoff", ylabel="From: class now")
    figure.colorbar(image, ax=axes, label="Probability of moving from the row to the column")
    return figure


def clv_decile_figure(y_true: npt.ArrayLike, predictions: Scores) -> Figure:
    """Mean predicted (dashed) and mean actual (solid) value by decile of each prediction.

    The decile chart of Wang, Liu & Miao (2019): a calibrated model's two lines coincide, a
    discriminating one's actual line falls steeply from decile 1. The legend gives the
    normalized Gini.
    """
    _require_series(predictions, "predictions")
    figure = Figure(figsize=(9, 5.5), layout="constrained")
    axes = figure.add_subplot()
    for (name, predicted), colour in zip(
        predictions.items(), _colours(len(predictions)), strict=True
    ):
        table = evaluate.decile_table(y_true, predicted)
        gini = evaluate.value_metrics(y_true, predicted)["normalized_gini"]
        label = f"{name} (Gini {gini:.3f})"
        axes.plot(
            table["decile"], table["mean_actual"], "o-", color=colour, label=f"{label} actual"
        )
        axes.plot(
            table["decile"], table["mean_predicted"], "s--", color=colour, label=f"{name} predicted"
        )
    axes.set(title="Predicted vs actual value by decile of the prediction")
    axes.set(xticks=range(1, evaluate.DECILES + 1))
    axes.set_xlabel("Decile of the prediction (1 = highest predicted value)")
    axes.set_ylabel("Mean value per customer (solid: actual, dashed: predicted)")
    axes.legend(loc="upper right")
    return figure
