"""Evaluation metrics against hand-computed values; figures render and save."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from training import evaluate, plots

# --- binary -----------------------------------------------------------------------------


def test_auc_of_a_perfect_ranking_is_1_and_of_the_reversed_ranking_0() -> None:
    y = [0, 0, 1, 1]
    assert evaluate.binary_metrics(y, [0.1, 0.2, 0.8, 0.9])["auc"] == 1.0
    assert evaluate.binary_metrics(y, [0.9, 0.8, 0.2, 0.1])["auc"] == 0.0


def test_auc_counts_a_tied_pair_as_half() -> None:
    # pairs (positive, negative): (0.3, 0.3) = 1/2, (0.3, 0.1) = 1, (0.9, 0.3) = 1, (0.9, 0.1) = 1
    assert evaluate.binary_metrics([0, 1, 0, 1], [0.3, 0.3, 0.1, 0.9])["auc"] == 0.875


def test_binary_metrics_by_hand() -> None:
    result = evaluate.binary_metrics([1, 0], [0.8, 0.4])
    assert result["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert result["brier"] == pytest.approx((0.2**2 + 0.4**2) / 2)
    assert result["average_precision"] == 1.0
    assert result["base_rate"] == 0.5
    assert result["mean_probability"] == pytest.approx(0.6)
    assert all(type(v) is float for v in result.values())


def test_log_loss_clips_a_certain_miss_to_a_finite_value() -> None:
    result = evaluate.binary_metrics([1, 0], [0.0, 1.0])
    assert result["log_loss"] == pytest.approx(-math.log(1e-7))


@pytest.mark.parametrize(
    ("y_true", "probability", "message"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], r"labels have a single class \(all 1\): AUC is undefined"),
        ([0, 0], [0.2, 0.5], r"single class \(all 0\)"),
        ([0, 1, 1], [0.2, 0.5], "y_true has 3 rows but probability has 2"),
        (
            [0, 1, 1],
            [0.2, 0.5, 1.2],
            r"probability\[2\] is 1.2: probabilities must lie in \[0, 1\]",
        ),
        ([0, 1, 1], [0.2, float("nan"), 0.3], r"probability\[1\] is nan"),
        ([0, 2, 1], [0.2, 0.5, 0.3], r"y_true\[1\] is 2.0: binary labels must be 0 or 1"),
    ],
)
def test_binary_metrics_reject_bad_input_naming_it(
    y_true: list[int], probability: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate.binary_metrics(y_true, probability)


def test_ranking_metrics_accept_any_score() -> None:
    days_since_last_purchase = [400.0, 10.0, 200.0, 30.0]  # higher = more likely churned
    result = evaluate.ranking_metrics([1, 0, 1, 0], days_since_last_purchase)
    assert result == {"auc": 1.0, "average_precision": 1.0}


# --- multiclass -------------------------------------------------------------------------

CLASSES = ["a", "b", "c", "d"]  # "d": never true, never predicted
TRUTH = ["a", "b", "c", "a"]
PROBABILITIES = [
    [0.7, 0.2, 0.1, 0.0],  # true a, predicted a
    [0.1, 0.8, 0.1, 0.0],  # true b, predicted b
    [0.5, 0.3, 0.2, 0.0],  # true c, predicted a
    [0.2, 0.5, 0.3, 0.0],  # true a, predicted b
]


def test_multiclass_metrics_by_hand() -> None:
    result = evaluate.multiclass_metrics(TRUTH, PROBABILITIES, CLASSES)
    expected_log_loss = -(math.log(0.7) + math.log(0.8) + math.log(0.2) + math.log(0.2)) / 4
    assert result["log_loss"] == pytest.approx(expected_log_loss)
    # F1 = 2 TP / (true + predicted): a 2/4, b 2/3, c 0/1; d is left out (neither seen nor predicted)
    assert result["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert result["accuracy"] == 0.5
    assert (result["recall_a"], result["recall_b"], result["recall_c"]) == (0.5, 1.0, 0.0)
    assert math.isnan(result["recall_d"])


def test_confusion_matrix_counts_rows_true_columns_predicted() -> None:
    predicted = ["a", "b", "a", "b"]
    matrix = evaluate.confusion_matrix(TRUTH, predicted, CLASSES)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_multiclass_names_unknown_labels_and_snake_cases_keys() -> None:
    with pytest.raises(ValueError, match=r"y_true holds labels absent from classes: \['z'\]"):
        evaluate.multiclass_metrics(["a", "z"], [[1.0, 0.0], [0.0, 1.0]], ["a", "b"])
    result = evaluate.multiclass_metrics(
        ["At Risk", "ok"], [[0.9, 0.1], [0.2, 0.8]], ["At Risk", "ok"]
    )
    assert result["recall_at_risk"] == 1.0


def test_multiclass_rejects_rows_that_do_not_sum_to_one() -> None:
    with pytest.raises(ValueError, match=r"probabilities row 1 sums to 0.5, not 1"):
        evaluate.multiclass_metrics(["a", "b"], [[0.5, 0.5], [0.25, 0.25]], ["a", "b"])


# --- value (CLV) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spend() -> np.ndarray:
    return np.random.default_rng(3).lognormal(mean=3.0, sigma=1.2, size=1000)


def test_mae_and_rmse_by_hand() -> None:
    actual = np.arange(10.0)
    result = evaluate.value_metrics(actual, actual + np.array([1, -1, 2, -2, 0, 0, 0, 0, 0, 0]))
    assert result["mae"] == pytest.approx(0.6)
    assert result["rmse"] == pytest.approx(1.0)  # sqrt((1 + 1 + 4 + 4) / 10)
    assert result["mean_actual"] == 4.5


def test_perfect_prediction(spend: np.ndarray) -> None:
    result = evaluate.value_metrics(spend, spend)
    top_hundred_share = np.sort(spend)[::-1][:100].sum() / spend.sum()
    assert result["normalized_gini"] == pytest.approx(1.0)
    assert result["top_decile_capture"] == pytest.approx(top_hundred_share)
    assert result["decile_calibration_error"] == 0.0
    assert result["spearman"] == pytest.approx(1.0)


def test_reversed_prediction_has_gini_minus_one(spend: np.ndarray) -> None:
    assert evaluate.value_metrics(spend, -spend)["normalized_gini"] == pytest.approx(-1.0)


def test_random_prediction_has_gini_near_zero() -> None:
    rng = np.random.default_rng(7)
    actual, random_prediction = rng.exponential(size=20_000), rng.random(20_000)
    # std of the Gini over seeds is ~0.009 at this size
    assert abs(evaluate.value_metrics(actual, random_prediction)["normalized_gini"]) < 0.03


def test_constant_prediction_is_a_random_ordering_on_average() -> None:
    actual = np.arange(1.0, 11.0)
    result = evaluate.value_metrics(actual, np.full(10, 5.0))
    assert result["normalized_gini"] == 0.0
    assert result["top_decile_capture"] == pytest.approx(0.1)
    assert math.isnan(result["spearman"])


def test_ties_in_the_prediction_do_not_depend_on_row_order(spend: np.ndarray) -> None:
    coarse = np.round(spend / 40)  # a handful of distinct values, ties across decile edges
    shuffled = np.random.default_rng(5).permutation(len(spend))
    first = evaluate.value_metrics(spend, coarse)
    second = evaluate.value_metrics(spend[shuffled], coarse[shuffled])
    assert second == pytest.approx(first)


def test_decile_calibration_error_is_zero_for_per_decile_actual_means(spend: np.ndarray) -> None:
    ordered = np.sort(spend)
    decile_means = np.repeat(ordered.reshape(10, 100).mean(axis=1), 100)
    error = evaluate.value_metrics(ordered, decile_means)["decile_calibration_error"]
    assert error == pytest.approx(0.0, abs=1e-12)  # recomputed means differ in the last bit


def test_decile_calibration_error_by_hand_leaves_out_a_zero_actual_decile() -> None:
    actual = np.arange(10.0)  # one customer per decile; the lowest has actual 0
    predicted = actual.copy()
    predicted[9] = 9.9  # top decile: |9.9 - 9| / 9 = 0.1
    assert evaluate.value_metrics(actual, predicted)["decile_calibration_error"] == pytest.approx(
        0.1 / 10
    )
    predicted[0] = 0.5  # bottom decile: actual mean 0, infinite relative error, left out
    assert evaluate.value_metrics(actual, predicted)["decile_calibration_error"] == pytest.approx(
        0.1 / 9
    )
    # In total value: (0.9 + 0.5) of the 45 there is.
    assert evaluate.value_metrics(actual, predicted)["decile_total_error"] == pytest.approx(
        1.4 / 45
    )


def test_decile_total_error_weighs_each_decile_by_its_value() -> None:
    # 100 customers, 10 a decile: the lowest decile's mean 0.1 predicted as 0.5 is a relative
    # error of 4 (Wang's MAPE 0.4 over ten deciles) but 4 of the 10 * 505 in total value.
    actual = np.repeat([0.1, *np.arange(10.0, 100.0, 10.0)], 10)
    predicted = actual.copy()
    predicted[:10] = 0.5
    metrics = evaluate.value_metrics(actual, predicted)
    assert metrics["decile_calibration_error"] == pytest.approx(4.0 / 10)
    assert metrics["decile_total_error"] == pytest.approx(4.0 / (10 * 450.1))
    assert evaluate.value_metrics(actual, actual)["decile_total_error"] == 0.0


def test_decile_table_sizes_and_order() -> None:
    actual = np.arange(25.0)
    table = evaluate.decile_table(actual, actual)
    assert table["count"].tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    assert table["mean_actual"].iloc[0] == 23.0  # 24, 23, 22
    assert table["share_of_actual"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("actual", "message"),
    [
        (np.ones(10), r"y_true is constant \(1.0\): the normalized Gini is undefined"),
        (np.arange(9.0), "y_true has 9 rows: 10 equal-count groups need at least 10"),
    ],
)
def test_value_metrics_reject_degenerate_actuals(actual: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate.value_metrics(actual, np.arange(len(actual), dtype=float))


# --- lift -------------------------------------------------------------------------------


def test_cumulative_gain_ends_at_one() -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(500) < 0.2
    table = evaluate.lift_table(labels, rng.random(500))
    assert table["cumulative_gain"].iloc[-1] == pytest.approx(1.0)
    assert table["positives"].sum() == labels.sum()


@pytest.mark.parametrize("positives", [50, 100, 250])
def test_perfect_ranking_lift_in_decile_one(positives: int) -> None:
    # Decile 1 holds 100 of 1000 rows: all positives fit when base_rate <= 0.1 (lift 10 = 1/0.1),
    # otherwise it is all positive (rate 1, lift 1 / base_rate).
    labels = (np.arange(1000) < positives).astype(float)
    base_rate = positives / 1000
    table = evaluate.lift_table(labels, -np.arange(1000.0))
    assert table["lift"].iloc[0] == pytest.approx(min(10.0, 1 / base_rate))
    assert table["cumulative_gain"].iloc[0] == pytest.approx(min(1.0, 0.1 / base_rate))


def test_constant_score_has_lift_one_everywhere() -> None:
    labels = (np.arange(100) % 4 == 0).astype(float)
    table = evaluate.lift_table(labels, np.zeros(100))
    assert table["lift"].tolist() == pytest.approx([1.0] * 10)
    assert table["positives"].tolist() == pytest.approx([2.5] * 10)


# --- promotion gate ---------------------------------------------------------------------


def test_improvement_is_signed_by_direction() -> None:
    assert evaluate.improvement(
        {"auc": 0.81}, {"auc": 0.80}, "auc", greater_is_better=True
    ) == pytest.approx(0.01)
    assert evaluate.improvement(
        {"log_loss": 0.30}, {"log_loss": 0.31}, "log_loss", greater_is_better=False
    ) == pytest.approx(0.01)
    assert evaluate.improvement(
        {"log_loss": 0.32}, {"log_loss": 0.31}, "log_loss", greater_is_better=False
    ) == pytest.approx(-0.01)


@pytest.mark.parametrize(
    ("candidate", "reference", "metric", "greater", "min_improvement", "expected"),
    [
        (0.81, 0.80, "auc", True, 0.01, True),  # exactly the margin (0.81 - 0.80 != 0.01 in floats)
        (0.81, 0.80, "auc", True, 0.0101, False),
        (0.80, 0.80, "auc", True, 0.0, False),  # a tie never promotes
        (0.79, 0.80, "auc", True, 0.0, False),
        (0.30, 0.31, "log_loss", False, 0.01, True),
        (0.7, 0.8, "log_loss", False, 0.1, True),  # 0.8 - 0.7 = 0.09999999999999998
        (0.305, 0.31, "log_loss", False, 0.01, False),
        (0.32, 0.31, "log_loss", False, 0.0, False),
    ],
)
def test_beats(
    candidate: float,
    reference: float,
    metric: str,
    greater: bool,
    min_improvement: float,
    expected: bool,
) -> None:
    result = evaluate.beats(
        {metric: candidate},
        {metric: reference},
        metric,
        greater_is_better=greater,
        min_improvement=min_improvement,
    )
    assert result is expected


def test_gate_errors_name_the_metric() -> None:
    with pytest.raises(KeyError, match="metric 'auc' missing from the reference metrics"):
        evaluate.improvement({"auc": 0.8}, {"log_loss": 0.3}, "auc", greater_is_better=True)
    with pytest.raises(ValueError, match="candidate auc is nan"):
        evaluate.beats(
            {"auc": math.nan}, {"auc": 0.8}, "auc", greater_is_better=True, min_improvement=0
        )
    with pytest.raises(ValueError, match=r"min_improvement is -0\.1"):
        evaluate.beats(
            {"auc": 0.9}, {"auc": 0.8}, "auc", greater_is_better=True, min_improvement=-0.1
        )


# --- figures ----------------------------------------------------------------------------

_rng = np.random.default_rng(4)
LABELS = (_rng.random(300) < 0.25).astype(float)
MODEL = np.clip(0.25 + 0.4 * (LABELS - 0.25) + _rng.normal(0, 0.15, 300), 0, 1)
BASELINE = _rng.random(300)
SPEND = _rng.lognormal(3, 1, 300)
FEATURES = _rng.normal(size=(300, 3))
FEATURES[::7, 1] = np.nan  # missing values are drawn grey
CONTRIBUTIONS = np.c_[
    3 * FEATURES[:, 0], np.nan_to_num(FEATURES[:, 1]), 2 * FEATURES[:, 2], np.ones(300)
]
STAGES = ["purchase", "retention", "churned"]

FIGURES: dict[str, tuple[Callable[[], Figure], int]] = {
    "roc_pr": (lambda: plots.roc_pr_figure(LABELS, {"model": MODEL, "random": BASELINE}), 2),
    "calibration": (lambda: plots.calibration_figure(LABELS, {"model": MODEL}, bins=5), 2),
    "lift_gain": (lambda: plots.lift_gain_figure(LABELS, {"model": MODEL, "random": BASELINE}), 2),
    "shap": (lambda: plots.shap_summary_figure(CONTRIBUTIONS, ["f0", "f1", "f2"], FEATURES), 2),
    "confusion": (
        lambda: plots.confusion_figure([[5, 1, 0], [2, 7, 1], [0, 3, 9]], STAGES, "Stage"),
        2,
    ),
    "transition": (
        lambda: plots.transition_heatmap_figure(
            [[0.2, 0.5, 0.3], [0.0, 0.8, 0.2], [0.0, 0.0, 0.0]], STAGES, "Transitions"
        ),
        2,
    ),
    "clv_deciles": (
        lambda: plots.clv_decile_figure(SPEND, {"model": SPEND * 1.1, "flat": BASELINE}),
        1,
    ),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_renders_with_titles_and_labels(name: str, tmp_path: Path) -> None:
    build, expected_axes = FIGURES[name]
    figure = build()
    assert isinstance(figure, Figure)
    assert len(figure.axes) == expected_axes  # plots plus any colour bar
    for axes in figure.axes:
        if axes.get_label() != "<colorbar>":
            assert axes.get_title() and axes.get_xlabel() and axes.get_ylabel()
    figure.savefig(tmp_path / f"{name}.png", dpi=40)
    assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_shap_summary_orders_features_by_mean_absolute_contribution() -> None:
    figure = plots.shap_summary_figure(CONTRIBUTIONS, ["f0", "f1", "f2"], FEATURES)
    bottom_to_top = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    assert bottom_to_top == ["f1", "f2", "f0"]  # scales 1, 2, 3: most influential on top


def test_transition_heatmap_rejects_rows_that_are_not_probabilities() -> None:
    with pytest.raises(ValueError, match=r"matrix row 1 \(retention\) sums to 0.9"):
        plots.transition_heatmap_figure([[1.0, 0, 0], [0.5, 0.4, 0], [0, 0, 1.0]], STAGES, "T")


def test_the_recency_baseline_ranks_as_recency_does_and_keeps_its_calibration() -> None:
    import pandas as pd
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    from training.baselines import RecencyChurnBaseline

    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[pd.DataFrame, np.ndarray]:
        days = rng.integers(0, 400, n).astype(float)
        churned = (rng.random(n) < 1 / (1 + np.exp(-(days - 150) / 60))).astype(int)
        return pd.DataFrame({"days_since_last_purchase": days}), churned

    (fit_x, fit_y), (x, y) = draw(3000), draw(5000)
    probabilities = RecencyChurnBaseline().fit(fit_x, fit_y).predict_proba(x)
    days = x["days_since_last_purchase"].to_numpy()
    # The isotonic steps alone tie customers of other recencies and, on other customers than
    # they were fitted on, lose AUC.
    iso = IsotonicRegression(out_of_bounds="clip").fit(fit_x["days_since_last_purchase"], fit_y)
    steps = iso.predict(days)
    assert roc_auc_score(y, steps) < roc_auc_score(y, days)
    assert roc_auc_score(y, probabilities) == pytest.approx(roc_auc_score(y, days))
    assert np.abs(probabilities - np.clip(steps, 1e-6, 1 - 1e-6)).max() < 1e-7
