"""BG/NBD + Gamma-Gamma on snapshot features, for any horizon.

The snapshot already holds each customer's BTYD summary in days: ``repeat_purchase_days``
(x), ``days_between_first_and_last_purchase`` (t_x) and ``days_since_first_purchase`` (T).
The Gamma-Gamma input is the mean spend of the *repeat* purchase days, as in Fader, Hardie &
Lee (2005): ``(total_spend - first_purchase_spend) / x``.

Customers who have not bought yet (prospects) are outside BTYD (it starts at the first
purchase). For them the model uses the purchase rate per day observed for prospects in the
training labels, as a Poisson rate: ``E[X(h)] = rate * h``, ``P(no purchase) = exp(-rate * h)``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import numba
import numpy as np
import pandas as pd

from training.btyd import (
    ALIVE,
    CLV,
    PURCHASES,
    SPEND,
    BetaGeoFitter,
    GammaGammaFitter,
    discounted_clv,
    row_outputs,
    trusted_inputs,
)

__all__ = ["FEW_ROWS", "BtydModel", "Summary", "summary"]

# Up to this many rows (a service request), BtydModel.prime computes a scoring call's BTYD
# outputs in one compiled pass; above, numpy's calls are cheap next to the work and the 2F1
# runs on every core (training.btyd._hyp2f1).
FEW_ROWS = 4096
# The CLV's discounting steps, in days (monthly), and days per year.
STEP_DAYS, YEAR_DAYS = 30, 365


@dataclass(frozen=True)
class Summary:
    """BTYD inputs of each customer; ``buyer`` is False for those with no purchase yet.

    ``memo`` keeps what a model computed from this summary (one scoring call asks several
    times for the same expected purchases and spend); its arrays are read-only.
    """

    buyer: np.ndarray
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    repeat_mean_spend: np.ndarray
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


def _column(frame: Any, name: str) -> np.ndarray:
    """One numeric column of a DataFrame or of a mapping of column name to 1-D array."""
    if isinstance(frame, pd.DataFrame):
        if name not in frame.columns:
            raise ValueError(f"missing feature column {name} (from features.rfm)")
        return pd.to_numeric(frame[name]).to_numpy(dtype=float, na_value=np.nan)
    if name not in frame:
        raise ValueError(f"missing feature column {name} (from features.rfm)")
    return np.asarray(frame[name], dtype=float)


def _on_buyers(
    s: Summary, compute: Callable[[Summary], np.ndarray], others: float, key: Any
) -> np.ndarray:
    """``compute`` on the buyers' rows only (BTYD starts at the first purchase), ``others``
    for the rest: the closed forms (2F1 series) are the costly part of scoring. Memoised in
    ``s.memo`` under ``key`` (which names the model, the quantity and its arguments)."""
    if key in s.memo:
        return s.memo[key]
    out = np.full(s.buyer.shape, others, dtype=float)
    b = s.buyer
    if b.any():
        buyers = s.memo.get("buyers")
        if not isinstance(buyers, Summary):
            buyers = Summary(b[b], s.x[b], s.t_x[b], s.T[b], s.repeat_mean_spend[b])
            s.memo["buyers"] = buyers
        with trusted_inputs():  # summaries are clean by construction: no input checks
            out[b] = compute(buyers)
    out.flags.writeable = False
    s.memo[key] = out
    return out


def _summary(X: Any) -> Summary:
    return X if isinstance(X, Summary) else summary(X)


def _zero_nan(values: np.ndarray) -> np.ndarray:
    """Missing as 0 (``np.nan_to_num`` for features, which are finite or missing; a fifth of
    its cost on the small arrays of a service request)."""
    return np.where(np.isnan(values), 0.0, values)


def summary(frame: Any) -> Summary:
    """BG/NBD's (x, t_x, T) and the repeat mean spend, in days, from snapshot features."""
    x = _column(frame, "repeat_purchase_days")
    t_x = _column(frame, "days_between_first_and_last_purchase")
    T = _column(frame, "days_since_first_purchase")
    total = _column(frame, "total_spend")
    first = _column(frame, "first_purchase_spend")
    if len(T) <= FEW_ROWS:  # a service request: one compiled pass, the same values
        lengths = {len(x), len(t_x), len(total), len(first)}
        if lengths != {len(T)}:
            raise ValueError(f"feature columns of different lengths: {sorted(lengths | {len(T)})}")
        buyer = np.empty(len(T), dtype=np.bool_)
        out = np.empty((4, len(T)))
        _summary_rows(x, t_x, T, total, first, buyer, out)
        return Summary(buyer, out[0], out[1], out[2], out[3])
    buyer = np.isfinite(T) & (T > 0)
    x = np.where(buyer, _zero_nan(x), 0.0)
    t_x = np.where(buyer, np.clip(_zero_nan(t_x), 0, None), 0.0)
    T = np.where(buyer, T, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        repeat_mean = np.where(x > 0, (_zero_nan(total) - _zero_nan(first)) / x, 0.0)
    return Summary(buyer, x, np.minimum(t_x, T), T, np.clip(repeat_mean, 0, None))


@numba.njit(nogil=True, cache=True)
def _summary_rows(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, total: np.ndarray, first: np.ndarray,
    buyer: np.ndarray, out: np.ndarray,
) -> None:  # fmt: skip
    """:func:`summary`'s numpy expressions, row by row: ``buyer``, then x, t_x, T and the
    repeat mean spend in the rows of ``out`` (NaN and infinity as there)."""
    for i in range(T.shape[0]):
        age = T[i]
        buyer[i] = np.isfinite(age) and age > 0
        xi, ti = 0.0, 0.0
        if buyer[i]:
            xi = 0.0 if np.isnan(x[i]) else x[i]
            ti = 0.0 if np.isnan(t_x[i]) or t_x[i] <= 0 else t_x[i]  # -0.0 too, as np.clip
        else:
            age = 1.0
        mean = 0.0
        if xi > 0:
            spent = (0.0 if np.isnan(total[i]) else total[i]) - (
                0.0 if np.isnan(first[i]) else first[i]
            )
            mean = spent / xi
            mean = 0.0 if mean <= 0 else mean  # -0.0 too, as np.clip (NaN stays)
        out[0, i], out[1, i], out[2, i], out[3, i] = xi, min(ti, age), age, mean


class BtydModel:
    """BG/NBD (purchases) and Gamma-Gamma (spend per purchase day), fitted per customer.

    ``fit`` uses the rows of the latest cutoff in ``population`` (default ``X``; each customer
    once); ``y_purchases`` (purchase days in the label window of ``label_horizon_days``) sets
    the prospects' rate.
    """

    def __init__(self, *, margin: float = 0.3, annual_discount_rate: float = 0.1) -> None:
        self.margin = margin
        self.annual_discount_rate = annual_discount_rate

    def fit(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        *,
        label_horizon_days: int,
        labels: str = "purchases",
        population: pd.DataFrame | None = None,
    ) -> Self:
        """Fit BG/NBD and Gamma-Gamma on ``population`` (a snapshot's features), by default
        the latest cutoff in ``X``; ``y`` (purchase days, or churn flags with
        ``labels="churned"``) over ``label_horizon_days`` sets the prospects' rate."""
        fitted_on = X if population is None else population
        self.bgnbd_, self.gamma_gamma_ = _fit_btyd(summary(fitted_on[_latest_rows(fitted_on)]))
        everyone = summary(X)
        self.prospect_rate_per_day_ = _prospect_rate(
            np.asarray(y, dtype=float)[~everyone.buyer], labels, label_horizon_days
        )
        first_spend = _column(X, "first_purchase_spend")[everyone.buyer]
        self.first_purchase_spend_ = float(np.nanmean(first_spend)) if everyone.buyer.any() else 0.0
        return self

    def fitted_on(self, population: pd.DataFrame) -> BtydModel:
        """A copy with BG/NBD and Gamma-Gamma fitted on ``population``, one snapshot's
        features (no labels): the customers as they stand at its cutoff. The prospects' rate
        (from the labels) and mean first spend (of the rows fitted on) are kept."""
        if population.empty:
            raise ValueError("cannot fit BG/NBD x Gamma-Gamma on an empty snapshot")
        twin = copy.copy(self)
        twin.bgnbd_, twin.gamma_gamma_ = _fit_btyd(summary(population[_latest_rows(population)]))
        return twin

    def probability_no_purchase(self, X: Any, horizon_days: float) -> np.ndarray:
        return _on_buyers(
            _summary(X),
            lambda b: self.bgnbd_.probability_no_purchase(horizon_days, b.x, b.t_x, b.T),
            np.exp(-self.prospect_rate_per_day_ * horizon_days),
            (id(self), "no_purchase", horizon_days),
        )

    def expected_purchases(self, X: Any, horizon_days: float) -> np.ndarray:
        return _on_buyers(
            _summary(X),
            lambda b: self.bgnbd_.expected_purchases(horizon_days, b.x, b.t_x, b.T),
            self.prospect_rate_per_day_ * horizon_days,
            (id(self), "purchases", horizon_days),
        )

    def expected_spend_per_purchase(self, X: Any) -> np.ndarray:
        return _on_buyers(
            _summary(X),
            lambda b: self.gamma_gamma_.conditional_expected_spend(b.x, b.repeat_mean_spend),
            self.first_purchase_spend_,
            (id(self), "spend"),
        )

    def probability_alive(self, X: Any) -> np.ndarray:
        return _on_buyers(
            _summary(X),
            lambda b: self.bgnbd_.probability_alive(b.x, b.t_x, b.T),
            np.nan,
            (id(self), "alive"),
        )

    def clv(self, X: Any, horizon_days: float) -> np.ndarray:
        """Discounted margin over the horizon (monthly steps); prospects undiscounted-rate."""
        return _on_buyers(
            _summary(X),
            lambda b: discounted_clv(
                self.bgnbd_,
                self.gamma_gamma_,
                b.x,
                b.t_x,
                b.T,
                b.repeat_mean_spend,
                horizon=horizon_days,
                margin=self.margin,
                annual_discount_rate=self.annual_discount_rate,
                step=STEP_DAYS,
                periods_per_year=YEAR_DAYS,
            ),
            self._prospect_clv(horizon_days),
            (id(self), "clv", horizon_days),
        )

    def _prospect_clv(self, horizon_days: float) -> float:
        spend = self.prospect_rate_per_day_ * horizon_days * self.first_purchase_spend_
        return self.margin * spend * self.discount_factor(horizon_days)

    def prime(self, X: Any, horizons: Iterable[float], clv_horizon_days: float) -> Summary:
        """``X``'s summary with what a scoring call asks of it already in its memo:
        ``probability_alive``, ``expected_spend_per_purchase``, ``expected_purchases`` at each
        of ``horizons`` and ``clv`` over ``clv_horizon_days``, from one compiled pass over
        the buyers (training.btyd.row_outputs: the same formulas, for few rows)."""
        s = _summary(X)
        if (id(self), "clv", clv_horizon_days) in s.memo:
            return s
        horizons = sorted(set(horizons))
        # One array: the prospects' values, then the buyers' computed over them.
        others = [np.nan, self.first_purchase_spend_, self._prospect_clv(clv_horizon_days)]
        others += [self.prospect_rate_per_day_ * h for h in horizons]
        out = np.repeat(np.asarray(others)[:, None], len(s.buyer), axis=1)
        row_outputs(
            self.bgnbd_,
            self.gamma_gamma_,
            s.x,
            s.t_x,
            s.T,
            s.repeat_mean_spend,
            horizons=horizons,
            clv_horizon=clv_horizon_days,
            margin=self.margin,
            annual_discount_rate=self.annual_discount_rate,
            step=STEP_DAYS,
            periods_per_year=YEAR_DAYS,
            rows=s.buyer,
            out=out,
        )
        out.flags.writeable = False
        memo, me = s.memo, id(self)
        memo[(me, "alive")], memo[(me, "spend")] = out[ALIVE], out[SPEND]
        memo[(me, "clv", clv_horizon_days)] = out[CLV]
        for k, horizon in enumerate(horizons):
            memo[(me, "purchases", horizon)] = out[PURCHASES + k]
        return s

    def discount_factor(self, horizon_days: float) -> float:
        """Mean discount over a horizon for value spread evenly across it."""
        return _mean_discount(self.annual_discount_rate, horizon_days)

    def outputs(self, X: Any, horizon_days: float) -> Any:
        """The BTYD columns added to the CLV model's features (a dict for a mapping ``X``)."""
        s = _summary(X)
        purchases = self.expected_purchases(s, horizon_days)
        columns = {
            "btyd_probability_alive": self.probability_alive(s),
            "btyd_expected_purchases": purchases,
            "btyd_expected_spend": purchases * self.expected_spend_per_purchase(s),
        }
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(columns, index=X.index)
        return columns


@functools.lru_cache(maxsize=64)
def _mean_discount(annual_rate: float, horizon_days: float) -> float:
    """Mean of the monthly discount factors over a horizon (memoised: every scoring call
    asks for the same one or two)."""
    years = np.linspace(0, horizon_days / 365, 13)[1:]
    return float(np.mean((1 + annual_rate) ** -years))


_FITTED: dict[str, tuple[BetaGeoFitter, GammaGammaFitter]] = {}


def _fit_btyd(s: Summary) -> tuple[BetaGeoFitter, GammaGammaFitter]:
    """BG/NBD and Gamma-Gamma maximum likelihood fits, memoised on the exact inputs.

    Evaluation, refit and the baselines of one run fit the same latest cutoff several times.
    """
    arrays = (s.buyer, s.x, s.t_x, s.T, s.repeat_mean_spend)
    key = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
    if key not in _FITTED:
        bgnbd = BetaGeoFitter().fit(s.x[s.buyer], s.t_x[s.buyer], s.T[s.buyer])
        repeat = s.buyer & (s.x > 0) & (s.repeat_mean_spend > 0)
        gamma_gamma = GammaGammaFitter().fit(s.x[repeat], s.repeat_mean_spend[repeat])
        if len(_FITTED) >= 16:  # a run fits each cutoff's population, for two or three models
            del _FITTED[next(iter(_FITTED))]
        _FITTED[key] = (bgnbd, gamma_gamma)
    return _FITTED[key]


def _prospect_rate(y: np.ndarray, labels: str, horizon_days: int) -> float:
    """Purchase days per day for prospects: from counts, or from P(no purchase) = exp(-rate h)."""
    if len(y) == 0:
        return 0.0
    if labels == "purchases":
        return float(y.mean() / horizon_days)
    if labels == "churned":
        return float(-np.log(np.clip(y.mean(), 1e-6, 1.0)) / horizon_days)
    raise ValueError(f"labels must be 'purchases' or 'churned', got {labels!r}")


def _latest_rows(X: pd.DataFrame) -> np.ndarray:
    if "as_of" not in X.columns:
        return np.ones(len(X), dtype=bool)
    as_of = X["as_of"]
    return (as_of == as_of.max()).to_numpy()
