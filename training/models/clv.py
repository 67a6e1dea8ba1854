"""CLV: expected purchase days, spend and discounted margin over the horizon.

Two families (compared in the backtest by :mod:`training.jobs`):

* ``family="btyd"``: BG/NBD x Gamma-Gamma (:class:`training.models.history.BtydModel`);
* ``family="xgboost"``: XGBoost on the snapshot features plus the BTYD outputs, boosted from
  the BTYD expectation (its log is each row's base margin, so the trees fit a factor on it):
  purchase days with a Poisson objective, spend with a Tweedie objective (spend is zero for
  most customers and skewed for the rest). Net spend below zero (refunds larger than purchases
  in the window) is fitted as zero.

The discounted CLV is ``margin x expected spend x`` the customer's discount factor, taken
from the BTYD timing of their purchases (monthly steps at the annual discount rate).
Horizons other than the label horizon ``h`` rescale XGBoost's outputs by BG/NBD's
``E[X(H)] / E[X(h)]`` for the customer (BTYD extrapolates by construction).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone

from training.models.base import (
    check_fitted,
    fit_booster,
    horizon_method,
    predict_booster,
    validation_split,
)
from training.models.history import FEW_ROWS, BtydModel, Summary, summary
from training.models.tabular import TabularEncoder, feature_frame

__all__ = ["FAMILIES", "ClvModel"]

FAMILIES = ("xgboost", "btyd")
TARGETS = ("label_purchases", "label_spend")


# The smallest BTYD expectation boosted from: a customer with none expected starts here,
# not at log(0).
SMALLEST_OFFSET = 1e-4


def _offset(expected: Any) -> np.ndarray:
    return np.clip(np.asarray(expected, dtype=float), SMALLEST_OFFSET, None)


def _log_offset(expected: Any) -> np.ndarray:
    return np.log(_offset(expected))


def _btyd_columns_by_cutoff(
    X: pd.DataFrame, populations: pd.DataFrame, btyd: BtydModel, horizon_days: int
) -> pd.DataFrame:
    """The BTYD columns of each row of ``X`` from a BG/NBD x Gamma-Gamma fitted on the
    customers of ``populations`` at the row's cutoff (``btyd`` gives the prospects' rate)."""
    if "as_of" not in X.columns:
        return pd.DataFrame(btyd.fitted_on(populations).outputs(X, horizon_days), index=X.index)
    parts = []
    for cutoff, rows in X.groupby("as_of", sort=True):
        where = f"the CLV model's BTYD columns at the cutoff {cutoff}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fitted = btyd.fitted_on(populations[populations["as_of"] == cutoff])
            except (ValueError, RuntimeError) as error:  # too few repeat buyers that early
                warnings.warn(f"{error}; the latest cutoff's fit is used", RuntimeWarning, 2)
                fitted = btyd.fitted_on(populations[populations["as_of"] == X["as_of"].max()])
        for warning in caught:  # say which cutoff's population the fit was on
            warnings.warn(f"{where}: {warning.message}", warning.category, stacklevel=3)
        parts.append(pd.DataFrame(fitted.outputs(rows, horizon_days), index=rows.index))
    return pd.concat(parts).loc[X.index]


class ClvModel(RegressorMixin, BaseEstimator):
    """Expected purchases, spend and discounted CLV; ``y`` has ``label_purchases, label_spend``."""

    def __init__(
        self,
        *,
        family: str = "xgboost",
        label_horizon_days: int = 365,
        horizon_days: int | None = None,
        margin: float = 0.3,
        annual_discount_rate: float = 0.1,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.family = family
        self.label_horizon_days = label_horizon_days
        self.horizon_days = horizon_days
        self.margin = margin
        self.annual_discount_rate = annual_discount_rate
        self.params = params

    def fit(
        self,
        X: pd.DataFrame,
        y: pd.DataFrame,
        present: pd.DataFrame | None = None,
        populations: pd.DataFrame | None = None,
    ) -> Self:
        """Fit on the snapshots ``X`` (one or more cutoffs) and their labels ``y``.

        BG/NBD x Gamma-Gamma needs no labels: it is fitted on the customers as they stand at
        the cutoff it scores. ``present`` is that snapshot (features only; the evaluation fold
        in a backtest, today's customers for the model that is served); without it, the
        latest cutoff in ``X``. XGBoost's BTYD columns on each training row come from a fit
        at that row's own cutoff, so they mean the same at training and at scoring time: on
        the customers of ``populations`` at that cutoff (snapshots, features only), by default
        on ``X``'s own rows.
        """
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        missing = [t for t in TARGETS if t not in y.columns]
        if missing:
            raise ValueError(f"CLV targets missing: {missing}")
        purchases = y["label_purchases"].to_numpy(float)
        spend = np.clip(y["label_spend"].to_numpy(float), 0.0, None)
        self.btyd_ = BtydModel(
            margin=self.margin, annual_discount_rate=self.annual_discount_rate
        ).fit(X, purchases, label_horizon_days=self.label_horizon_days, population=present)
        self.encoder_: TabularEncoder | None = None
        if self.family == "xgboost":
            rows = X if populations is None else populations
            columns = _btyd_columns_by_cutoff(X, rows, self.btyd_, self.label_horizon_days)
            self._fit_xgboost(X, purchases, spend, columns)
        self.feature_names_in_ = np.array(feature_frame(X).columns, dtype=object)
        return self

    def as_btyd(self) -> ClvModel:
        """This model fitted as ``family="btyd"`` would be on the same rows, without fitting
        again: the BG/NBD x Gamma-Gamma part is fitted for either family (a copy of it)."""
        check_fitted(self)
        twin = clone(self).set_params(family="btyd")
        twin.btyd_ = copy.deepcopy(self.btyd_)
        twin.encoder_ = None
        twin.feature_names_in_ = self.feature_names_in_.copy()
        return twin

    def _fit_xgboost(
        self, X: pd.DataFrame, purchases: np.ndarray, spend: np.ndarray, columns: pd.DataFrame
    ) -> None:
        if not (spend > 0).any():
            raise ValueError("no customer has positive spend in the CLV label window")
        augmented = pd.concat([X, columns], axis=1)
        split = validation_split(X, self.label_horizon_days)
        # Boosted from BG/NBD x Gamma-Gamma: the trees fit a factor on the BTYD expectation
        # (base score 1: no change), which extrapolates where trees alone stay flat.
        params = {**(self.params or {}), "base_score": 1.0}
        count = {**params, "objective": "count:poisson"}
        start = _log_offset(columns["btyd_expected_purchases"])
        self.encoder_, self.purchases_booster_ = fit_booster(
            count, augmented, purchases, split, base_margin=start
        )
        tweedie = {**params, "objective": "reg:tweedie", "tweedie_variance_power": 1.3}
        start = _log_offset(columns["btyd_expected_spend"])
        _, self.spend_booster_ = fit_booster(tweedie, augmented, spend, split, base_margin=start)

    def _augment(self, X: Any, horizon_days: int, s: Summary | None = None) -> Any:
        """``X`` with the BTYD columns; ``s`` is ``X``'s summary if already at hand."""
        columns = self.btyd_.outputs(s if s is not None else summary(X), horizon_days)
        if isinstance(X, pd.DataFrame):
            return pd.concat([X, pd.DataFrame(columns, index=X.index)], axis=1)
        return {**X, **columns}

    def predict_frame(self, X: pd.DataFrame, horizon_days: int | None = None) -> pd.DataFrame:
        """``expected_purchases``, ``expected_spend`` and ``clv`` over the horizon."""
        return pd.DataFrame(self.predict_columns(X, horizon_days))

    def predict_columns(
        self,
        X: Any,
        horizon_days: int | None = None,
        encoded: tuple[TabularEncoder, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`predict_frame` as a dict of arrays; ``X`` may be a mapping of arrays.

        ``encoded`` is another model's encoder and its matrix of ``X`` (a service scores the
        same rows with the churn model first): the columns it holds are copied, not encoded
        again (TabularEncoder.transform_sharing)."""
        check_fitted(self)
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        btyd, s = self.btyd_, summary(X)
        if len(s.buyer) <= FEW_ROWS:
            btyd.prime(s, (wanted, self.label_horizon_days), wanted)
        btyd_purchases = btyd.expected_purchases(s, wanted)
        btyd_spend = btyd_purchases * btyd.expected_spend_per_purchase(s)
        if self.family == "btyd":
            purchases, spend = btyd_purchases, btyd_spend
        else:
            purchases, spend = self._xgboost_outputs(X, wanted, s, encoded)
        with np.errstate(invalid="ignore", divide="ignore"):
            discount = btyd.clv(s, wanted) / (self.margin * btyd_spend)
        discount = np.where(np.isfinite(discount), discount, btyd.discount_factor(wanted))
        return {
            "expected_purchases": np.asarray(purchases, dtype=float),
            "expected_spend": np.asarray(spend, dtype=float),
            "clv": self.margin * spend * np.clip(discount, 0.0, 1.0),
        }

    def _xgboost_outputs(
        self, X: Any, wanted: int, s: Summary, encoded: tuple[TabularEncoder, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.encoder_ is not None
        h = self.label_horizon_days
        augmented = feature_frame(self._augment(X, h, s))
        if encoded is not None and not isinstance(augmented, pd.DataFrame):
            matrix = self.encoder_.transform_sharing(augmented, *encoded)
        else:
            matrix = self.encoder_.transform(augmented)
        btyd = self.btyd_.outputs(s, h)  # memoised in s: the columns _augment added
        purchases = predict_booster(self.purchases_booster_, matrix)
        purchases = purchases * _offset(btyd["btyd_expected_purchases"])
        spend = predict_booster(self.spend_booster_, matrix) * _offset(btyd["btyd_expected_spend"])
        if wanted != h:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = self.btyd_.expected_purchases(s, wanted) / self.btyd_.expected_purchases(
                    s, h
                )
            ratio = np.where(np.isfinite(ratio), ratio, wanted / h)
            purchases, spend = purchases * ratio, spend * ratio
        return purchases, spend

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_frame(X)["expected_spend"].to_numpy()

    def method(self, horizon_days: int | None = None) -> str:
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        if self.family == "btyd":
            return "BG/NBD x Gamma-Gamma (extrapolates to any horizon)"
        return horizon_method(self.label_horizon_days, wanted, "the BG/NBD ratio E[X(H)] / E[X(h)]")
