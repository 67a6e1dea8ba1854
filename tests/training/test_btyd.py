"""BG/NBD and Gamma-Gamma: published CDNOW numbers, Monte Carlo checks, behaviour and errors.

The CDNOW sample (2357 customers, times in weeks) is read straight out of the lifetimes wheel.
Published values: Fader, Hardie & Lee (2005), "Counting your customers the easy way", and
Fader & Hardie (2013), "The Gamma-Gamma model of monetary value".
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import hyp2f1

from training import btyd
from training.btyd import BetaGeoFitter, GammaGammaFitter, NotFittedError, discounted_clv

# The compiled pass and numpy's vector math (AVX-512 here) round apart: agree to 1e-13.
RTOL = 1e-13
WEEK = 7.0


def _read_csv(wheel: Path, name: str) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as archive:
        return pd.read_csv(io.BytesIO(archive.read(f"lifetimes/datasets/{name}")))


@pytest.fixture(scope="module")
def cdnow(lifetimes_wheel: Path) -> pd.DataFrame:
    """ID, x, t_x, T (weeks) and zbar (mean repeat spend, 0 when x == 0)."""
    return _read_csv(lifetimes_wheel, "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def bgnbd(cdnow: pd.DataFrame) -> BetaGeoFitter:
    return BetaGeoFitter().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def bgnbd_in_days(cdnow: pd.DataFrame) -> BetaGeoFitter:
    return BetaGeoFitter().fit(cdnow["x"], cdnow["t_x"] * WEEK, cdnow["T"] * WEEK)


@pytest.fixture(scope="module")
def gamma_gamma(cdnow: pd.DataFrame) -> GammaGammaFitter:
    return GammaGammaFitter().fit(cdnow["x"], cdnow["zbar"])


def simulate_bgnbd(params: dict[str, float], T: np.ndarray, t: float, seed: int) -> SimpleNamespace:
    """Customers of the BG/NBD process observed over (0, T] and (T, T + t]."""
    rng = np.random.default_rng(seed)
    n, end = T.size, (T + t)[:, None]
    rate = rng.gamma(params["r"], 1 / params["alpha"], n)
    # The customer drops out right after their j-th repeat purchase, j ~ Geometric(p) on 1, 2, ..
    last_purchase = rng.geometric(rng.beta(params["a"], params["b"], n))
    ticks = rng.poisson(rate * end[:, 0])
    slots = np.arange(ticks.max())
    times = np.sort(np.where(slots < ticks[:, None], rng.uniform(0, end, (n, slots.size)), np.inf))
    made = slots < np.minimum(ticks, last_purchase)[:, None]
    before_T = made & (times <= T[:, None])
    return SimpleNamespace(
        x=before_T.sum(axis=1),
        t_x=np.where(before_T, times, 0.0).max(axis=1, initial=0.0),
        T=T,
        holdout=(made & ~before_T).sum(axis=1),
    )


def z_score(observed: np.ndarray, expected: np.ndarray) -> float:
    """Sum of residuals over its standard error (each residual has mean 0 given the history)."""
    residuals = observed - expected
    return float(residuals.sum() / np.sqrt(np.sum(residuals**2)))


# --- published numbers ---------------------------------------------------------------------


def test_bgnbd_reproduces_published_cdnow_estimates(
    bgnbd: BetaGeoFitter, cdnow: pd.DataFrame
) -> None:
    assert len(cdnow) == 2357
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert bgnbd.params_[name] == pytest.approx(value, abs=1e-3), name
    assert bgnbd.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    assert bgnbd.n_customers_ == 2357


def test_bgnbd_in_days_gives_same_shape_parameters_and_alpha_times_seven(
    bgnbd: BetaGeoFitter, bgnbd_in_days: BetaGeoFitter, cdnow: pd.DataFrame
) -> None:
    for name in ("r", "a", "b"):
        assert bgnbd_in_days.params_[name] == pytest.approx(bgnbd.params_[name], rel=1e-6), name
    assert bgnbd_in_days.params_["alpha"] == pytest.approx(bgnbd.params_["alpha"] * WEEK, rel=1e-6)
    # A density over x purchase times: each customer's likelihood gains a factor 7**-x.
    shift = cdnow["x"].sum() * np.log(WEEK)
    assert bgnbd_in_days.log_likelihood_ == pytest.approx(bgnbd.log_likelihood_ - shift, abs=1e-6)


def test_bgnbd_weights_count_identical_customers(bgnbd: BetaGeoFitter, cdnow: pd.DataFrame) -> None:
    unique = cdnow.groupby(["x", "t_x", "T"], as_index=False).size()
    assert len(unique) < len(cdnow)
    weighted = BetaGeoFitter().fit(unique["x"], unique["t_x"], unique["T"], weights=unique["size"])
    for name, value in bgnbd.params_.items():
        assert weighted.params_[name] == pytest.approx(value, rel=1e-5), name
    assert weighted.log_likelihood_ == pytest.approx(bgnbd.log_likelihood_, abs=1e-4)
    assert weighted.n_customers_ == 2357


def test_gamma_gamma_reproduces_published_cdnow_estimates(gamma_gamma: GammaGammaFitter) -> None:
    # The note prints gamma = 15.44; the maximum is at 15.448 (LL -4055.923 vs -4055.925).
    published = {"p": 6.25, "q": 3.74, "gamma": 15.44}
    for name, value in published.items():
        assert gamma_gamma.params_[name] == pytest.approx(value, abs=0.01), name
    assert gamma_gamma.n_customers_ == 946
    assert gamma_gamma.n_excluded_ == 2357 - 946


def test_published_conditional_expectation_for_customer_1(bgnbd: BetaGeoFitter) -> None:
    # FHL 2005, section 4: x = 2, t_x = 30.43, T = 38.86 weeks; 1.226 purchases in 39 weeks.
    assert bgnbd.expected_purchases(39, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)


def test_probability_alive_is_one_without_repeat_purchase(bgnbd: BetaGeoFitter) -> None:
    np.testing.assert_array_equal(bgnbd.probability_alive(0, 0, [0.5, 38.86, 500.0]), 1.0)
    # A long silence after several purchases makes dropping out likely, a recent one does not.
    assert (
        bgnbd.probability_alive(5, 2.0, 38.86) < 0.1 < 0.8 < bgnbd.probability_alive(5, 38, 38.86)
    )


# --- formulas against the process they describe --------------------------------------------


@pytest.fixture(scope="module")
def simulated(bgnbd: BetaGeoFitter) -> SimpleNamespace:
    return simulate_bgnbd(bgnbd.params_, np.full(40_000, 39.0), t=39.0, seed=7)


def history_bins(sim: SimpleNamespace) -> list[np.ndarray]:
    """Repeat count 0, 1, 2, 3-4, 5+, each (x > 0) split by a last purchase in the second half."""
    recent = sim.t_x > sim.T / 2
    groups = [sim.x == 0]
    for low, high in [(1, 1), (2, 2), (3, 4), (5, 10**6)]:
        in_range = (sim.x >= low) & (sim.x <= high)
        groups += [in_range & recent, in_range & ~recent]
    return groups


def test_probability_no_purchase_matches_simulated_process(
    bgnbd: BetaGeoFitter, simulated: SimpleNamespace
) -> None:
    predicted = bgnbd.probability_no_purchase(39.0, simulated.x, simulated.t_x, simulated.T)
    silent = (simulated.holdout == 0).astype(float)
    for group in history_bins(simulated):
        assert group.sum() > 300
        assert abs(z_score(silent[group], predicted[group])) < 4


def test_expected_purchases_matches_simulated_process(
    bgnbd: BetaGeoFitter, simulated: SimpleNamespace
) -> None:
    predicted = bgnbd.expected_purchases(39.0, simulated.x, simulated.t_x, simulated.T)
    for group in history_bins(simulated):
        assert abs(z_score(simulated.holdout[group], predicted[group])) < 4


def test_unconditional_expected_purchases_matches_simulated_process(
    bgnbd: BetaGeoFitter, simulated: SimpleNamespace
) -> None:
    predicted = np.full(simulated.x.size, bgnbd.unconditional_expected_purchases(39.0))
    assert abs(z_score(simulated.x, predicted)) < 4
    assert bgnbd.unconditional_expected_purchases(0.0) == 0.0


def test_fit_in_days_recovers_simulated_parameters() -> None:
    """Likelihood-ratio check: 2 (LL(fit) - LL(truth)) is chi-square(4) if the fit is the MLE."""
    truth = {"r": 0.5, "alpha": 60.0, "a": 1.5, "b": 4.0}
    T = np.random.default_rng(3).uniform(30, 1095, 5000)
    sim = simulate_bgnbd(truth, T, t=1.0, seed=5)
    fitted = BetaGeoFitter().fit(sim.x, sim.t_x, sim.T)
    true_log_params = np.log([truth[k] for k in ("r", "alpha", "a", "b")])
    at_truth = btyd._bgnbd_log_likelihood(true_log_params, sim.x, sim.t_x, sim.T).sum()
    assert 0 <= 2 * (fitted.log_likelihood_ - at_truth) < 20


def test_expected_purchases_equals_untransformed_eq_10(bgnbd: BetaGeoFitter) -> None:
    """Where the direct 2F1 of FHL 2005 eq. 10 is finite, the Euler form gives the same value."""
    r, alpha, a, b = (bgnbd.params_[k] for k in ("r", "alpha", "a", "b"))
    x, t_x, T, t = np.array([0, 1, 3, 10]), np.array([0.0, 5.0, 20.0, 37.0]), 38.86, 52.0
    z = t / (alpha + T + t)
    alive_term = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(
        r + x, b + x, a + b + x - 1, z
    )
    dropout = np.where(
        x > 0, a / (b + np.maximum(x, 1) - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0
    )
    direct = (a + b + x - 1) / (a - 1) * alive_term / (1 + dropout)
    np.testing.assert_allclose(bgnbd.expected_purchases(t, x, t_x, T), direct, rtol=1e-9)


# --- behaviour -----------------------------------------------------------------------------


def test_probability_no_purchase_bounds_and_direction(bgnbd: BetaGeoFitter) -> None:
    horizons = np.array([0.0, 1.0, 10.0, 52.0, 520.0])
    silent = bgnbd.probability_no_purchase(horizons, 4, 30.0, 38.86)
    assert silent[0] == 1.0
    assert np.all((silent >= 0) & (silent <= 1))
    assert np.all(np.diff(silent) < 0)
    # Given alive the customer is silent with prob. E[exp(-lambda t)] under Gamma(r + x, alpha + T).
    r, alpha = bgnbd.params_["r"], bgnbd.params_["alpha"]
    expected = ((alpha + 38.86) / (alpha + 38.86 + horizons)) ** r
    np.testing.assert_allclose(bgnbd.probability_no_purchase(horizons, 0, 0, 38.86), expected)


def test_expected_purchases_stay_finite_for_long_histories_in_days(
    bgnbd_in_days: BetaGeoFitter,
) -> None:
    x = np.array([1, 10, 50, 100, 300])[:, None]
    t_x = np.linspace(0, 3000, 61)[None, :]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        expected = bgnbd_in_days.expected_purchases(365.0, x, t_x, 3000.0)
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    # A more recent last purchase never lowers the forecast; more purchases raise a recent one.
    assert np.all(np.diff(expected, axis=1) >= 0)
    assert np.all(np.diff(expected[:, -1]) > 0)
    assert expected[-1, -1] > 5


def test_expected_purchases_grow_with_horizon(bgnbd: BetaGeoFitter) -> None:
    horizons = np.array([0.0, 1.0, 13.0, 52.0, 520.0])
    expected = bgnbd.expected_purchases(horizons, 3, 25.0, 38.86)
    assert expected[0] == 0.0
    assert np.all(np.diff(expected) > 0)


def test_conditional_expected_spend_shrinks_towards_population_mean(
    gamma_gamma: GammaGammaFitter,
) -> None:
    p, q, gamma = (gamma_gamma.params_[k] for k in ("p", "q", "gamma"))
    population_mean = gamma * p / (q - 1)
    spend = gamma_gamma.conditional_expected_spend([0, 1, 1, 10], [0.0, 100.0, 5.0, 100.0])
    assert spend[0] == pytest.approx(population_mean)
    assert population_mean < spend[1] < spend[3] < 100.0  # more purchases, more trust in m_x
    assert 5.0 < spend[2] < population_mean
    weight = p / (p + q - 1)
    assert spend[1] == pytest.approx((1 - weight) * population_mean + weight * 100.0)


def test_conditional_expected_spend_needs_q_above_one(gamma_gamma: GammaGammaFitter) -> None:
    heavy_tailed = GammaGammaFitter()
    heavy_tailed.params_ = {**gamma_gamma.params_, "q": 0.9}
    with pytest.raises(ValueError, match=r"q = 0\.9 <= 1"):
        heavy_tailed.conditional_expected_spend(2, 30.0)


def test_discounted_clv_without_discount_is_margin_times_spend_times_purchases(
    bgnbd: BetaGeoFitter, gamma_gamma: GammaGammaFitter, cdnow: pd.DataFrame
) -> None:
    rows = cdnow.iloc[:50]
    history = (rows["x"], rows["t_x"], rows["T"], rows["zbar"])
    options = {"margin": 0.3, "step": 4.0, "periods_per_year": 52.0}
    undiscounted = discounted_clv(
        bgnbd, gamma_gamma, *history, horizon=50.0, annual_discount_rate=0.0, **options
    )
    spend = gamma_gamma.conditional_expected_spend(rows["x"], rows["zbar"])
    purchases = bgnbd.expected_purchases(50.0, rows["x"], rows["t_x"], rows["T"])
    np.testing.assert_allclose(undiscounted, 0.3 * spend * purchases, rtol=1e-12)
    discounted = discounted_clv(
        bgnbd, gamma_gamma, *history, horizon=50.0, annual_discount_rate=0.1, **options
    )
    assert np.all(discounted < undiscounted) and np.all(discounted > undiscounted / 1.1)
    steeper = discounted_clv(
        bgnbd, gamma_gamma, *history, horizon=50.0, annual_discount_rate=0.3, **options
    )
    assert np.all(steeper < discounted)


# --- errors --------------------------------------------------------------------------------

GOOD: dict[str, Any] = {"frequency": [2, 0, 1], "recency": [3.0, 0.0, 1.0], "T": [5.0, 4.0, 6.0]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recency": [3.0, 0.0]}, r"frequency, recency and T must be 1-D of one length"),
        ({"frequency": [2, -1, 1]}, r"^frequency: 1 value\(s\) .* at index 1"),
        ({"frequency": [2, 0, 1.5]}, r"^frequency: 1 value\(s\) are not non-negative integers"),
        ({"recency": [np.nan, 0.0, 1.0]}, r"^recency: 1 value\(s\) are not finite.* index 0"),
        ({"recency": [6.0, 0.0, 7.0]}, r"^recency: 2 value\(s\) are outside \[0, T\].* index 0"),
        ({"recency": [3.0, 1.0, 1.0]}, r"^recency: .* not 0 where frequency is 0.* index 1"),
        ({"T": [5.0, 0.0, 6.0]}, r"^T: 1 value\(s\) are not positive.* index 1"),
        ({"frequency": [0, 0, 0], "recency": [0, 0, 0]}, r"no customer has a repeat purchase"),
        ({"weights": [1, 2]}, r"^weights must have shape \(3,\)"),
        ({"weights": [1, -2, 1]}, r"^weights: 1 value\(s\) .* index 1"),
    ],
)
def test_bgnbd_fit_rejects_bad_input(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BetaGeoFitter().fit(**{**GOOD, **change})


def test_bgnbd_rejects_negative_penalizer() -> None:
    with pytest.raises(ValueError, match="penalizer"):
        BetaGeoFitter(penalizer=-1.0).fit(**GOOD)


def test_gamma_gamma_fit_names_bad_spend_of_repeat_buyer() -> None:
    # Row 1 has no repeat purchase: its spend is ignored, so row 2 is the first bad one.
    with pytest.raises(ValueError, match=r"^monetary_value: 2 value\(s\) .* at index 2"):
        GammaGammaFitter().fit([1, 0, 2, 3], [10.0, -1.0, -5.0, np.inf])


def test_predictions_before_fit_raise() -> None:
    with pytest.raises(NotFittedError, match="BetaGeoFitter is not fitted"):
        BetaGeoFitter().expected_purchases(10, 1, 1.0, 2.0)
    with pytest.raises(NotFittedError, match="GammaGammaFitter is not fitted"):
        GammaGammaFitter().conditional_expected_spend(1, 10.0)


def test_prediction_rejects_negative_horizon(bgnbd: BetaGeoFitter) -> None:
    with pytest.raises(ValueError, match=r"^t: 1 value\(s\) .* index 1"):
        bgnbd.probability_no_purchase([1.0, -1.0], 1, 1.0, 2.0)


def test_fit_reports_optimiser_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    failed = SimpleNamespace(success=False, fun=np.nan, x=np.zeros(4), message="too many steps")
    monkeypatch.setattr(btyd, "minimize", lambda *args, **kwargs: failed)
    with pytest.raises(RuntimeError, match="BG/NBD fit did not converge: too many steps"):
        BetaGeoFitter().fit(**GOOD)
    # A finite point the optimiser stopped at (a likelihood still rising, flatter and
    # flatter) is used, with a warning that names it.
    stopped = SimpleNamespace(success=False, fun=1.0, x=np.log([0.5, 2.0, 3.0, 4.0]),
                              message="too many steps")  # fmt: skip
    monkeypatch.setattr(btyd, "minimize", lambda *args, **kwargs: stopped)
    with pytest.warns(RuntimeWarning, match=r"stopped before converging \(too many steps\)"):
        fitted = BetaGeoFitter().fit(**GOOD)
    assert fitted.params_["a"] == pytest.approx(3.0) and fitted.params_["b"] == pytest.approx(4.0)


def test_a_fit_without_dropout_predicts_the_nbd_limit_not_nan() -> None:
    """a and b ran off together (seen on 1,500 sample customers: a = 130,737,
    b = 12,949,224): the Euler form is inf x 0; the limit without dropout is used, which the
    formula approaches where it is still finite."""
    x, t_x, T = np.array([2.0, 0.0, 7.0]), np.array([300.0, 0.0, 500.0]), np.full(3, 700.0)
    runaway = BetaGeoFitter()
    runaway.params_ = {"r": 1.1438690736, "alpha": 17.956, "a": 130736.6, "b": 12949224.4}
    got = runaway.expected_purchases(365.0, x, t_x, T)
    assert np.all(np.isfinite(got))
    nbd = (1.1438690736 + x) / (17.956 + T) * 365.0
    alive = runaway.probability_alive(x, t_x, T)
    np.testing.assert_allclose(got, alive * nbd, rtol=1e-12)
    large = BetaGeoFitter()  # a and b 100 times smaller: still finite, and close to it
    large.params_ = {**runaway.params_, "a": 1307.366, "b": 129492.244}
    near = large.expected_purchases(365.0, x, t_x, T)
    np.testing.assert_allclose(near, got, rtol=0.05)
    out = np.zeros((btyd.PURCHASES + 1, 3))
    gg = GammaGammaFitter()
    gg.params_ = {"p": 6.25, "q": 3.74, "gamma": 15.44}
    btyd.row_outputs(runaway, gg, x, t_x, T, np.array([20.0, 0.0, 30.0]), horizons=[365.0],
                     clv_horizon=365.0, rows=np.ones(3, dtype=bool), out=out, margin=0.3,
                     annual_discount_rate=0.1, step=30.0, periods_per_year=365.0)  # fmt: skip
    np.testing.assert_array_equal(out[btyd.PURCHASES], got)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("margin", 0.0),
        ("margin", 1.5),
        ("annual_discount_rate", -0.1),
        ("horizon", 0.0),
        ("step", -1.0),
        ("periods_per_year", np.inf),
    ],
)
def test_discounted_clv_rejects_bad_options(
    bgnbd: BetaGeoFitter, gamma_gamma: GammaGammaFitter, option: str, value: float
) -> None:
    options = {"horizon": 52.0, "margin": 0.3, "annual_discount_rate": 0.1, "step": 4.0}
    options |= {"periods_per_year": 52.0, option: value}
    with pytest.raises(ValueError, match=f"^{option} must be"):
        discounted_clv(bgnbd, gamma_gamma, 1, 2.0, 3.0, 20.0, **options)


def test_hyp2f1_on_every_core_equals_scipys_and_keeps_the_shape() -> None:
    rng = np.random.default_rng(5)
    c = rng.uniform(1.0, 40.0, btyd.SPLIT // 4 + 3)
    z = rng.uniform(0.0, 0.95, (5, 1)) * np.ones((1, len(c)))  # a grid of horizons x customers
    got = btyd._hyp2f1(0.7, 1.3, c, z)
    assert got.shape == z.shape and z.size > btyd.SPLIT  # split over the cores
    np.testing.assert_array_equal(got, hyp2f1(0.7, 1.3, c, z))


def test_row_outputs_equal_the_methods_customer_by_customer(
    bgnbd_in_days: BetaGeoFitter, gamma_gamma: GammaGammaFitter, cdnow: pd.DataFrame
) -> None:
    """The compiled pass a service request takes gives the methods' values (to 1e-13
    relative: numpy's vector exp/log on AVX-512 and the compiled scalar ones round
    apart); only the rows asked for are computed."""
    x, t_x, T = (cdnow[k].to_numpy(dtype=float) for k in ("x", "t_x", "T"))
    t_x, T, spend = t_x * WEEK, T * WEEK, cdnow["zbar"].to_numpy(dtype=float)
    options = {"margin": 0.3, "annual_discount_rate": 0.1, "step": 30.0, "periods_per_year": 365.0}
    rows = np.arange(x.size) % 3 != 0
    out = np.full((btyd.PURCHASES + 2, x.size), -1.0)
    btyd.row_outputs(
        bgnbd_in_days, gamma_gamma, x, t_x, T, spend, horizons=[90.0, 365.0], clv_horizon=365.0,
        rows=rows, out=out, **options,
    )  # fmt: skip
    assert np.all(out[:, ~rows] == -1.0)
    x, t_x, T, spend, out = x[rows], t_x[rows], T[rows], spend[rows], out[:, rows]
    alive = bgnbd_in_days.probability_alive(x, t_x, T)
    np.testing.assert_allclose(out[btyd.ALIVE], alive, rtol=RTOL, atol=0)
    for k, horizon in enumerate([90.0, 365.0]):
        expected = bgnbd_in_days.expected_purchases(horizon, x, t_x, T)
        np.testing.assert_allclose(out[btyd.PURCHASES + k], expected, rtol=RTOL, atol=0)
    spend_per_purchase = gamma_gamma.conditional_expected_spend(x, spend)
    np.testing.assert_allclose(out[btyd.SPEND], spend_per_purchase, rtol=RTOL, atol=0)
    clv = discounted_clv(bgnbd_in_days, gamma_gamma, x, t_x, T, spend, horizon=365.0, **options)
    np.testing.assert_allclose(out[btyd.CLV], clv, rtol=1e-14)
    assert np.all(out[btyd.CLV] > 0)


def test_row_outputs_check_the_fit_and_options(
    bgnbd: BetaGeoFitter, gamma_gamma: GammaGammaFitter
) -> None:
    one = np.ones(1)
    options = {"horizons": [1.0], "clv_horizon": 4.0, "annual_discount_rate": 0.1}
    options |= {"step": 1.0, "periods_per_year": 52.0}
    with pytest.raises(ValueError, match=r"margin must be in \(0, 1\], got 0"):
        btyd.row_outputs(bgnbd, gamma_gamma, one, one, one * 2, one, margin=0, **options)
    with pytest.raises(NotFittedError, match="GammaGammaFitter is not fitted"):
        btyd.row_outputs(bgnbd, GammaGammaFitter(), one, one, one * 2, one, margin=0.3, **options)
    heavy_tailed = GammaGammaFitter()
    heavy_tailed.params_ = {**gamma_gamma.params_, "q": 0.9}
    with pytest.raises(ValueError, match=r"q = 0\.9 <= 1"):
        btyd.row_outputs(bgnbd, heavy_tailed, one, one, one * 2, one, margin=0.3, **options)
    with pytest.raises(ValueError, match=r"1-D inputs of one length and out of shape \(4, 1\)"):
        btyd.row_outputs(bgnbd, gamma_gamma, one, np.ones(2), one * 2, one, margin=0.3, **options)


def test_the_compiled_2f1_is_scipys_for_real_arguments() -> None:
    """row_outputs calls scipy's cython hyp2f1 by its fused name: pin that name's signature."""
    import scipy.special.cython_special as cython_special

    capsule = cython_special.__pyx_capi__["__pyx_fuse_1hyp2f1"]
    assert '"double (double, double, double, double, int' in repr(capsule)
    args = (0.7, 1.3, 2.9, 0.4)
    assert btyd._hyp2f1_real(*args, 0) == hyp2f1(*args)
