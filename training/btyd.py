"""BG/NBD purchase counts, Gamma-Gamma spend and their discounted CLV, by maximum likelihood.

Inputs follow the BTYD convention (features.rfm): ``frequency`` is ``x``, the number of repeat
purchases; ``recency`` is ``t_x``, the time from the first to the last purchase; ``T`` is the
time since the first purchase. Any time unit works and parameters come back in that unit; the
fit divides times (and amounts) by their mean so that it converges the same in days or weeks.

References
----------
.. [FHL05a] Fader, Hardie & Lee (2005), "'Counting your customers' the easy way: an
   alternative to the Pareto/NBD model", Marketing Science 24(2), 275-284.
.. [FHL05b] Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer
   base analysis", Journal of Marketing Research 42(4), 415-430.
.. [FH13] Fader & Hardie (2013), "The Gamma-Gamma model of monetary value" (note).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Self

import numba
import numpy as np
from numba.extending import get_cython_function_address
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1

__all__ = [
    "ALIVE",
    "CLV",
    "PURCHASES",
    "SPEND",
    "BetaGeoFitter",
    "GammaGammaFitter",
    "NotFittedError",
    "discounted_clv",
    "row_outputs",
]

Array = NDArray[np.float64]


class NotFittedError(ValueError, AttributeError):
    """A prediction method was called before ``fit`` (same bases as scikit-learn's)."""


def _as_array(name: str, values: ArrayLike) -> Array:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from error


def _reject(name: str, bad: NDArray[np.bool_], values: Array, problem: str) -> None:
    """Raise if any value is ``bad``: name the argument, the count and the first index."""
    if np.any(bad):
        where = np.flatnonzero(bad)
        first = int(where[0])
        value = float(np.ravel(values)[first])
        raise ValueError(
            f"{name}: {where.size} value(s) {problem}; the first is {value!r} at index {first}"
        )


_TRUSTED: ContextVar[bool] = ContextVar("btyd_trusted_inputs", default=False)


@contextmanager
def trusted_inputs() -> Iterator[None]:
    """Skip the input checks of predictions inside this block.

    For callers whose inputs are clean by construction (training.models.history builds them
    from snapshot features): the checks cost more than the formulas for a few rows.
    """
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _history(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *, same_length: bool
) -> tuple[Array, Array, Array]:
    """Validated ``(x, t_x, T)``: 1-D of one length for ``fit``, broadcast for predictions."""
    if _TRUSTED.get() and not same_length:
        x, t_x, age = np.broadcast_arrays(
            np.asarray(frequency, float), np.asarray(recency, float), np.asarray(T, float)
        )
        return x, t_x, age
    x, t_x, age = (
        _as_array(n, v) for n, v in [("frequency", frequency), ("recency", recency), ("T", T)]
    )
    if same_length and not (x.ndim == t_x.ndim == age.ndim == 1 and x.size == t_x.size == age.size):
        raise ValueError(
            "frequency, recency and T must be 1-D of one length, got shapes "
            f"{x.shape}, {t_x.shape} and {age.shape}"
        )
    try:
        x, t_x, age = np.broadcast_arrays(x, t_x, age)
    except ValueError as error:
        raise ValueError(f"frequency, recency and T do not broadcast: {error}") from error
    for name, values in [("frequency", x), ("recency", t_x), ("T", age)]:
        _reject(name, ~np.isfinite(values), values, "are not finite")
    _reject("frequency", (x < 0) | (x != np.floor(x)), x, "are not non-negative integers")
    _reject("T", age <= 0, age, "are not positive")
    _reject("recency", (t_x < 0) | (t_x > age), t_x, "are outside [0, T]")
    _reject("recency", (x == 0) & (t_x != 0), t_x, "are not 0 where frequency is 0")
    return x, t_x, age


def _times(name: str, values: ArrayLike) -> Array:
    if _TRUSTED.get():
        return np.asarray(values, dtype=np.float64)
    array = _as_array(name, values)
    _reject(name, ~np.isfinite(array) | (array < 0), array, "are not finite and >= 0")
    return array


def _weights(weights: ArrayLike | None, size: int) -> Array:
    if weights is None:
        return np.ones(size)
    array = _as_array("weights", weights)
    if array.shape != (size,):
        raise ValueError(f"weights must have shape ({size},) like the data, got {array.shape}")
    _reject("weights", ~np.isfinite(array) | (array < 0), array, "are not finite and >= 0")
    if array.sum() <= 0:
        raise ValueError("weights sum to 0: no customer would count")
    return array


def _maximise(
    log_likelihood: Callable[[Array], Array],
    n_params: int,
    weights: Array,
    penalizer: float,
    model: str,
) -> Array:
    """Log-parameters maximising the mean weighted log-likelihood minus an L2 penalty.

    The penalty ``penalizer * sum(params**2)`` on the (scaled) parameters is the one of the
    lifetimes package; 0 gives the plain maximum-likelihood estimate.
    """

    def objective(log_params: Array) -> float:
        mean = np.dot(weights, log_likelihood(log_params)) / weights.sum()
        return float(-mean + penalizer * np.sum(np.exp(log_params) ** 2))

    # L-BFGS-B gets close in few evaluations; Nelder-Mead from a small simplex around its
    # answer polishes to the tolerance the published estimates need (measured on 27,000
    # customers: 355 evaluations instead of 831 for Nelder-Mead alone).
    rough = minimize(
        objective, np.zeros(n_params), method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-10}
    )
    start = rough.x if np.isfinite(rough.fun) else np.zeros(n_params)
    result = minimize(
        objective,
        start,
        method="Nelder-Mead",
        options={
            "xatol": 1e-9,
            "fatol": 1e-12,
            "maxiter": 20_000,
            "initial_simplex": np.vstack([start, start + 1e-3 * np.eye(n_params)]),
        },
    )
    if not np.isfinite(result.fun):
        raise RuntimeError(f"{model} fit did not converge: {result.message}")
    if not result.success:
        # Typically a history with no sign of dropout: the likelihood keeps rising as the
        # parameters run off, flatter and flatter; the point reached predicts as the limit.
        warnings.warn(
            f"{model} fit stopped before converging ({result.message}); its parameters "
            f"{np.exp(result.x).round(4).tolist()} are used",
            RuntimeWarning,
            stacklevel=2,
        )
    return np.asarray(result.x, dtype=np.float64)


def _check_penalizer(penalizer: float) -> None:
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ValueError(f"penalizer must be a finite number >= 0, got {penalizer!r}")


def _bgnbd_log_likelihood(log_params: Array, x: Array, t_x: Array, T: Array) -> Array:
    """Per-customer BG/NBD log-likelihood, [FHL05a] eq. 6."""
    r, alpha, a, b = np.exp(log_params)
    repeat = x > 0
    shared = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    alive_at_T = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    # Dropped out right after the last purchase; only possible with a repeat purchase.
    dropped = betaln(a + 1, b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    return np.asarray(shared + np.logaddexp(alive_at_T, np.where(repeat, dropped, -np.inf)))


class BetaGeoFitter:
    """BG/NBD model of repeat purchases [FHL05a].

    While alive a customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)``; after each repeat
    purchase they drop out with probability ``p ~ Beta(a, b)``.

    Parameters
    ----------
    penalizer : float, default 0
        L2 penalty on the parameters fitted on times divided by their mean (lifetimes' form).

    Attributes
    ----------
    params_ : dict
        ``r``, ``alpha`` (in the time unit of the data), ``a``, ``b``.
    log_likelihood_ : float
        Weighted log-likelihood at the estimate, in the data's time unit.
    n_customers_ : float
        Customers fitted (the sum of the weights).
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> Self:
        """Maximum-likelihood fit; ``weights`` counts identical customers (default 1 each)."""
        _check_penalizer(self.penalizer)
        x, t_x, age = _history(frequency, recency, T, same_length=True)
        counts = _weights(weights, x.size)
        if not np.any((x > 0) & (counts > 0)):
            raise ValueError("cannot fit BG/NBD: no customer has a repeat purchase")
        scale = float(np.dot(counts, age) / counts.sum())
        t_x, age = t_x / scale, age / scale
        log_params = _maximise(
            lambda p: _bgnbd_log_likelihood(p, x, t_x, age), 4, counts, self.penalizer, "BG/NBD"
        )
        r, alpha, a, b = np.exp(log_params)
        self.params_ = {"r": float(r), "alpha": float(alpha * scale), "a": float(a), "b": float(b)}
        # Rescaling times multiplies each likelihood by scale**x (the density of x purchase times).
        scaled = np.dot(counts, _bgnbd_log_likelihood(log_params, x, t_x, age))
        self.log_likelihood_ = float(scaled - np.dot(counts, x) * np.log(scale))
        self.n_customers_ = float(counts.sum())
        return self

    def _fitted(self) -> tuple[float, float, float, float]:
        if not hasattr(self, "params_"):
            raise NotFittedError("this BetaGeoFitter is not fitted yet: call fit(...) first")
        return self.params_["r"], self.params_["alpha"], self.params_["a"], self.params_["b"]

    def _log_odds_dropped(self, x: Array, t_x: Array, T: Array) -> Array:
        """log P(dropped) / P(alive) given the history; ``-inf`` when ``x == 0``."""
        r, alpha, a, b = self._fitted()
        silence = np.log((alpha + T) / (alpha + t_x))
        odds = np.log(a / (b + np.maximum(x, 1) - 1)) + (r + x) * silence
        return np.asarray(np.where(x > 0, odds, -np.inf))

    def _expected_if_alive(self, t: Array, x: Array, T: Array) -> Array:
        """Numerator of [FHL05a] eq. 10, 2F1 under Euler's transformation.

        ``(1-z)**(r+x) * 2F1(r+x, b+x; c; z) = (1-z)**(a-1) * 2F1(a+b-1-r, a-1; c; z)`` with
        ``c = a+b+x-1``: the first parameters no longer grow with ``x`` and the series converges
        at ``z = 1``, so large ``x`` and ``T`` in days stay finite. Undefined at ``a == 1``.
        """
        r, alpha, a, b = self._fitted()
        z = t / (alpha + T + t)
        c = a + b + x - 1
        with np.errstate(invalid="ignore", over="ignore"):
            expected = np.asarray(
                c / (a - 1) * (1 - (1 - z) ** (a - 1) * _hyp2f1(a + b - 1 - r, a - 1, c, z))
            )
        lost = ~np.isfinite(expected) & (a > 2)  # (a == 1: undefined, left as it is)
        if lost.any():
            # A fit that saw no dropout runs a and b off together (a/(a+b) stays put, the
            # Beta becomes a point mass): (1-z)**(a-1) underflows while 2F1 overflows. Where
            # that happens, the limit without dropout, the NBD's (r + x) / (alpha + T) * t.
            limit = np.broadcast_to((r + x) / (alpha + T) * t, expected.shape)
            expected = np.where(lost, limit, expected)
        return np.asarray(expected)

    def probability_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Array:
        """P(alive at T | x, t_x, T): 1 / the denominator of [FHL05a] eq. 10; 1 if ``x == 0``."""
        x, t_x, age = _history(frequency, recency, T, same_length=False)
        return np.asarray(expit(-self._log_odds_dropped(x, t_x, age)))

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Array:
        """E[purchases in (T, T + t] | x, t_x, T], [FHL05a] eq. 10 (``t`` broadcasts)."""
        x, t_x, age = _history(frequency, recency, T, same_length=False)
        horizon = _times("t", t)
        alive = expit(-self._log_odds_dropped(x, t_x, age))
        return np.asarray(alive * self._expected_if_alive(horizon, x, age))

    def probability_no_purchase(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Array:
        """P(no purchase in (T, T + t] | x, t_x, T).

        Derived from [FHL05a]: a customer drops out only right after a purchase, so one alive
        at ``T`` makes no purchase in ``(T, T + t]`` exactly when the Poisson clock does not
        tick, with probability ``exp(-lambda t)``. Given alive, ``lambda`` and ``p`` separate
        and ``lambda | x, T ~ Gamma(r + x, alpha + T)``, whose Laplace transform gives
        ``((alpha + T) / (alpha + T + t))**(r + x)``. A dropped customer never buys, hence
        ``(1 - P_alive) + P_alive * ((alpha + T) / (alpha + T + t))**(r + x)``.
        """
        r, alpha, _, _ = self._fitted()
        x, t_x, age = _history(frequency, recency, T, same_length=False)
        horizon = _times("t", t)
        alive = expit(-self._log_odds_dropped(x, t_x, age))
        silent_if_alive = np.exp(-(r + x) * np.log1p(horizon / (alpha + age)))
        return np.asarray(1 - alive + alive * silent_if_alive)

    def unconditional_expected_purchases(self, t: ArrayLike) -> Array:
        """E[X(t)], repeat purchases in ``(0, t]`` after a first purchase, [FHL05a] eq. 9."""
        horizon = _times("t", t)
        return self._expected_if_alive(horizon, np.zeros_like(horizon), np.zeros_like(horizon))


def _spend_log_likelihood(log_params: Array, x: Array, m_x: Array) -> Array:
    """Per-customer log density of the mean spend ``m_x`` of ``x`` repeat purchases [FH13]."""
    p, q, gamma = np.exp(log_params)
    px = p * x
    shape_terms = gammaln(px + q) - gammaln(px) - gammaln(q)
    scale_terms = q * np.log(gamma) + px * np.log(x) + (px - 1) * np.log(m_x)
    return np.asarray(shape_terms + scale_terms - (px + q) * np.log(gamma + x * m_x))


def _spend_history(
    frequency: ArrayLike, monetary_value: ArrayLike, *, same_length: bool
) -> tuple[Array, Array]:
    """Validated ``(x, m_x)``; ``m_x`` must be finite and positive where ``x > 0``."""
    if _TRUSTED.get() and not same_length:
        x, m_x = np.broadcast_arrays(
            np.asarray(frequency, float), np.asarray(monetary_value, float)
        )
        return x, m_x
    x = _as_array("frequency", frequency)
    m_x = _as_array("monetary_value", monetary_value)
    if same_length and not (x.ndim == m_x.ndim == 1 and x.size == m_x.size):
        raise ValueError(
            "frequency and monetary_value must be 1-D of one length, got shapes "
            f"{x.shape} and {m_x.shape}"
        )
    try:
        x, m_x = np.broadcast_arrays(x, m_x)
    except ValueError as error:
        raise ValueError(f"frequency and monetary_value do not broadcast: {error}") from error
    not_count = ~np.isfinite(x) | (x < 0) | (x != np.floor(x))
    _reject("frequency", not_count, x, "are not non-negative integers")
    with np.errstate(invalid="ignore"):
        bad_spend = (x > 0) & ~(np.isfinite(m_x) & (m_x > 0))
    _reject("monetary_value", bad_spend, m_x, "are not finite and > 0 where frequency > 0")
    return x, m_x


class GammaGammaFitter:
    """Gamma-Gamma model of spend per transaction [FHL05b], [FH13].

    A customer's transaction values are ``Gamma(p, nu)`` with ``nu ~ Gamma(q, gamma)`` across
    customers, independent of the purchase process. Only repeat buyers inform the fit.

    Parameters
    ----------
    penalizer : float, default 0
        L2 penalty on the parameters fitted on amounts divided by their mean.

    Attributes
    ----------
    params_ : dict
        ``p``, ``q``, ``gamma`` (``gamma`` in the currency of the data; ``v`` in some texts).
    log_likelihood_ : float
        Weighted log-likelihood at the estimate, in the data's currency.
    n_customers_ : float
        Repeat buyers fitted (the sum of their weights).
    n_excluded_ : int
        Rows with ``frequency == 0`` left out by ``fit``: they have no repeat spend to average.
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(
        self, frequency: ArrayLike, monetary_value: ArrayLike, weights: ArrayLike | None = None
    ) -> Self:
        """Fit on rows with ``frequency > 0``; ``monetary_value`` is their mean repeat spend."""
        _check_penalizer(self.penalizer)
        x, m_x = _spend_history(frequency, monetary_value, same_length=True)
        counts = _weights(weights, x.size)
        repeat = (x > 0) & (counts > 0)
        if not np.any(repeat):
            raise ValueError("cannot fit Gamma-Gamma: no customer has a repeat purchase")
        x, m_x, counts = x[repeat], m_x[repeat], counts[repeat]
        scale = float(np.dot(counts, m_x) / counts.sum())
        m_x = m_x / scale
        log_params = _maximise(
            lambda p: _spend_log_likelihood(p, x, m_x), 3, counts, self.penalizer, "Gamma-Gamma"
        )
        p, q, gamma = np.exp(log_params)
        self.params_ = {"p": float(p), "q": float(q), "gamma": float(gamma * scale)}
        # Rescaling amounts multiplies each customer's density by scale.
        scaled = np.dot(counts, _spend_log_likelihood(log_params, x, m_x))
        self.log_likelihood_ = float(scaled - counts.sum() * np.log(scale))
        self.n_customers_ = float(counts.sum())
        self.n_excluded_ = int(np.size(repeat) - np.count_nonzero(repeat))
        return self

    def _fitted(self) -> tuple[float, float, float]:
        """``(p, q, gamma)``; refuses q <= 1 (an infinite mean spend)."""
        if not hasattr(self, "params_"):
            raise NotFittedError("this GammaGammaFitter is not fitted yet: call fit(...) first")
        p, q, gamma = self.params_["p"], self.params_["q"], self.params_["gamma"]
        if q <= 1:
            raise ValueError(f"the fitted q = {q:.4g} <= 1: the mean spend is infinite")
        return p, q, gamma

    def conditional_expected_spend(self, frequency: ArrayLike, monetary_value: ArrayLike) -> Array:
        """E[M | x, m_x], [FH13] eq. 5 (also [FHL05b]); the population mean when ``x == 0``.

        ``(q - 1) / (p x + q - 1) * gamma p / (q - 1) + p x / (p x + q - 1) * m_x``: a weighted
        mean of the population mean ``gamma p / (q - 1)`` and the customer's own ``m_x``.
        """
        p, q, gamma = self._fitted()
        x, m_x = _spend_history(frequency, monetary_value, same_length=False)
        own_weight = p * x / (p * x + q - 1)
        own_spend = np.where(x > 0, m_x, 0.0)
        return np.asarray((1 - own_weight) * gamma * p / (q - 1) + own_weight * own_spend)


def _check_clv_options(
    horizon: float, margin: float, annual_discount_rate: float, step: float, periods_per_year: float
) -> None:
    positive = {"horizon": horizon, "step": step, "periods_per_year": periods_per_year}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (0 < margin <= 1):
        raise ValueError(f"margin must be in (0, 1], got {margin!r}")
    if not (math.isfinite(annual_discount_rate) and annual_discount_rate >= 0):
        raise ValueError(
            f"annual_discount_rate must be a finite number >= 0, got {annual_discount_rate!r}"
        )


def discounted_clv(
    bgnbd: BetaGeoFitter,
    gamma_gamma: GammaGammaFitter,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    *,
    horizon: float,
    margin: float,
    annual_discount_rate: float,
    step: float,
    periods_per_year: float,
) -> Array:
    """Expected discounted margin over ``(T, T + horizon]``, in steps of ``step`` time units.

    The discrete approximation of [FHL05b] and lifetimes' ``customer_lifetime_value``: step
    ``i`` ends at ``tau_i = min(i * step, horizon)``, carries ``E[X(tau_i)] - E[X(tau_(i-1))]``
    purchases (BG/NBD, conditional on the history) and is discounted by
    ``(1 + annual_discount_rate) ** (-tau_i / periods_per_year)``, i.e. by
    ``(1 + d_step) ** -i`` with ``d_step = (1 + rate) ** (step / periods_per_year) - 1``.
    Each purchase is worth ``margin`` times the Gamma-Gamma expected spend. Times are in the
    unit the BG/NBD was fitted in, e.g. days with ``step=30, periods_per_year=365``.
    """
    _check_clv_options(horizon, margin, annual_discount_rate, step, periods_per_year)
    spend = gamma_gamma.conditional_expected_spend(frequency, monetary_value)
    x, t_x, age = _history(frequency, recency, T, same_length=False)
    ends, discount = _clv_steps(horizon, annual_discount_rate, step, periods_per_year)
    cumulative = bgnbd.expected_purchases(ends.reshape(-1, *[1] * x.ndim), x, t_x, age)
    per_step = np.diff(cumulative, axis=0, prepend=0.0)
    return np.asarray(margin * spend * np.tensordot(discount, per_step, axes=1))


# Above this many values, scipy's hyp2f1 (which releases the GIL) runs on every core: batch
# scoring evaluates it at a dozen horizons for each of 50,000 customers a chunk.
SPLIT = 100_000
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_CORES, thread_name_prefix="clm-hyp2f1")


def _hyp2f1(a: float, b: float, c: Array, z: Array) -> Array:
    if np.size(c) * np.size(z) < SPLIT or _CORES < 2:  # a service request: as it is
        return np.asarray(hyp2f1(a, b, c, z))
    c, z = np.broadcast_arrays(np.asarray(c, dtype=float), np.asarray(z, dtype=float))
    if c.size < SPLIT:
        return np.asarray(hyp2f1(a, b, c, z))
    workers = _CORES
    flat_c, flat_z = c.ravel(), z.ravel()
    out = np.empty(c.size)
    edges = np.linspace(0, c.size, workers + 1).astype(int)

    def part(i: int) -> None:
        lo, hi = edges[i], edges[i + 1]
        hyp2f1(a, b, flat_c[lo:hi], flat_z[lo:hi], out=out[lo:hi])

    list(_pool().map(part, range(workers)))
    return out.reshape(c.shape)


# scipy's own 2F1 for real arguments (the ufunc's kernel), callable from compiled code; passed
# to the kernel as an argument, not read as a global, so that numba can cache the kernel.
_hyp2f1_real = ctypes.CFUNCTYPE(
    ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double,
    ctypes.c_int,
)(get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1hyp2f1"))  # fmt: skip


# The rows of row_outputs' result, then one of expected purchases per horizon.
ALIVE, SPEND, CLV, PURCHASES = range(4)


@functools.lru_cache(maxsize=64)
def _clv_steps(
    horizon: float, annual_discount_rate: float, step: float, periods_per_year: float
) -> tuple[Array, Array]:
    """discounted_clv's step ends and their discount factors (read-only: memoised)."""
    ends = np.minimum(step * np.arange(1, int(np.ceil(horizon / step)) + 1), horizon)
    discount = (1 + annual_discount_rate) ** (-ends / periods_per_year)
    ends.flags.writeable = discount.flags.writeable = False
    return ends, discount


def row_outputs(
    bgnbd: BetaGeoFitter,
    gamma_gamma: GammaGammaFitter,
    frequency: Array,
    recency: Array,
    T: Array,
    monetary_value: Array,
    *,
    horizons: Sequence[float],
    clv_horizon: float,
    margin: float,
    annual_discount_rate: float,
    step: float,
    periods_per_year: float,
    rows: NDArray[np.bool_] | None = None,
    out: Array | None = None,
) -> Array:
    """``probability_alive``, ``conditional_expected_spend``, :func:`discounted_clv` over
    ``clv_horizon`` and ``expected_purchases`` at each of ``horizons``, in one compiled pass:
    the rows ``ALIVE``, ``SPEND``, ``CLV``, then ``PURCHASES + k`` of a
    ``(3 + len(horizons), n)`` array (``out`` if given). With ``rows``, only the customers
    where it is True are computed; ``out`` keeps what it holds for the others.

    The same formulas as those methods and scipy's 2F1, customer by customer, for the few
    rows of a service request, where numpy's cost per call is most of the time. Results
    equal the methods' bit for bit, but for the CLV's sum over steps (a few ulp). Inputs are
    trusted: 1-D float arrays of one length, clean (as training.models.history makes them).
    """
    _check_clv_options(clv_horizon, margin, annual_discount_rate, step, periods_per_year)
    ends, discount = _clv_steps(clv_horizon, annual_discount_rate, step, periods_per_year)
    # Floats: a whole-number parameter would make numba take an integer power.
    r, alpha, a, b = map(float, bgnbd._fitted())
    p, q, gamma = map(float, gamma_gamma._fitted())
    n = len(frequency)
    if out is None:
        out = np.empty((PURCHASES + len(horizons), n))
    if rows is None:
        rows = np.ones(n, dtype=np.bool_)
    size = (n,)
    wanted = (PURCHASES + len(horizons), n)
    if not (
        np.shape(frequency) == np.shape(recency) == np.shape(T) == size
        and np.shape(monetary_value) == np.shape(rows) == size
        and out.shape == wanted
    ):
        named = {"frequency": frequency, "recency": recency, "T": T}
        shapes = {k: np.shape(v) for k, v in named.items()}
        shapes |= {"monetary_value": np.shape(monetary_value), "rows": np.shape(rows)}
        raise ValueError(
            f"row_outputs needs 1-D inputs of one length and out of shape {wanted}; "
            f"got {shapes}, out {out.shape}"
        )
    _rows(
        frequency, recency, T, monetary_value, rows, r, alpha, a, b, p, q, gamma,
        np.asarray(horizons, dtype=float), ends, discount, margin, out, _hyp2f1_real,
    )  # fmt: skip
    return out


@numba.njit(nogil=True, cache=True, error_model="numpy")  # a == 1: inf or NaN, as numpy
def _expected_if_alive_at(t: float, x: float, T: float, r: float, alpha: float, a: float,
                          b: float, gauss_2f1: Callable[..., float]) -> float:  # fmt: skip
    """One value of BetaGeoFitter._expected_if_alive, in its order of operations."""
    z = t / (alpha + T + t)
    c = a + b + x - 1
    value = c / (a - 1) * (1 - (1 - z) ** (a - 1) * gauss_2f1(a + b - 1 - r, a - 1, c, z, 0))
    if not np.isfinite(value) and a > 2:  # a and b run off together: the limit, as above
        return (r + x) / (alpha + T) * t
    return value


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _rows(
    x: Array, t_x: Array, T: Array, m_x: Array, rows: NDArray[np.bool_], r: float, alpha: float,
    a: float, b: float, p: float, q: float, gamma: float, horizons: Array, ends: Array,
    discount: Array, margin: float, out: Array, gauss_2f1: Callable[..., float],
) -> None:  # fmt: skip
    for i in range(x.shape[0]):
        if not rows[i]:
            continue
        xi, age = x[i], T[i]
        alive = 1.0
        if xi > 0:
            silence = np.log((alpha + age) / (alpha + t_x[i]))
            odds = np.log(a / (b + max(xi, 1.0) - 1)) + (r + xi) * silence
            alive = 1.0 / (1.0 + np.exp(odds))  # expit(-odds)
        own_weight = p * xi / (p * xi + q - 1)
        own_spend = m_x[i] if xi > 0 else 0.0
        spend = (1 - own_weight) * gamma * p / (q - 1) + own_weight * own_spend
        before, total = 0.0, 0.0
        for j in range(ends.shape[0]):
            now = alive * _expected_if_alive_at(ends[j], xi, age, r, alpha, a, b, gauss_2f1)
            total += discount[j] * (now - before)
            before = now
        out[ALIVE, i], out[SPEND, i], out[CLV, i] = alive, spend, margin * spend * total
        for k in range(horizons.shape[0]):
            out[PURCHASES + k, i] = alive * _expected_if_alive_at(
                horizons[k], xi, age, r, alpha, a, b, gauss_2f1
            )
