"""CLV: expected purchase days, spend and discounted margin over the horizon.

Two families (compared in the backtest by :mod:`training.jobs`):

* ``family="btyd"``: BG/NBD x Gamma-Gamma (:class:`training.models.history.BtydModel`);
* ``family="xgboost"``: XGBoost on the snapshot features plus the BTYD outputs: purchase
  days with a Poisson objective, spend with a Tweedie objective (spend is zero for most
  customers and skewed for the rest). Net spend below zero (refunds larger than purchases
  in the window) is fitted as zero.

The discounted CLV is ``margin x expected spend x`` the customer's discount factor, taken
from the BTYD timing of their purchases (monthly steps at the annual discount rate).
Horizons other than the label horizon ``h`` rescale XGBoost's outputs by BG/NBD's
``E[X(H)] / E[X(h)]`` for the customer (BTYD extrapolates by construction).
"""

from __future__ import annotations

import copy
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone

from training.models.base import (
    check_fitted,
    fit_booster,
    horizon_method,
    predict_booster,
    validation_mask,
)
from training.models.history import FEW_ROWS, BtydModel, Summary, summary
from training.models.tabular import TabularEncoder, feature_frame

__all__ = ["FAMILIES", "ClvModel"]

FAMILIES = ("xgboost", "btyd")
TARGETS = ("label_purchases", "label_spend")


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

    def fit(self, X: pd.DataFrame, y: pd.DataFrame) -> Self:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        missing = [t for t in TARGETS if t not in y.columns]
        if missing:
            raise ValueError(f"CLV targets missing: {missing}")
        purchases = y["label_purchases"].to_numpy(float)
        spend = np.clip(y["label_spend"].to_numpy(float), 0.0, None)
        self.btyd_ = BtydModel(
            margin=self.margin, annual_discount_rate=self.annual_discount_rate
        ).fit(X, purchases, label_horizon_days=self.label_horizon_days)
        self.encoder_: TabularEncoder | None = None
        if self.family == "xgboost":
            self._fit_xgboost(X, purchases, spend)
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

    def _fit_xgboost(self, X: pd.DataFrame, purchases: np.ndarray, spend: np.ndarray) -> None:
        if not (spend > 0).any():
            raise ValueError("no customer has positive spend in the CLV label window")
        augmented = self._augment(X, self.label_horizon_days)
        valid = validation_mask(X)
        params = dict(self.params or {})
        count = {**params, "objective": "count:poisson"}
        self.encoder_, self.purchases_booster_ = fit_booster(count, augmented, purchases, valid)
        tweedie = {**params, "objective": "reg:tweedie", "tweedie_variance_power": 1.3}
        _, self.spend_booster_ = fit_booster(tweedie, augmented, spend, valid)

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
        purchases = predict_booster(self.purchases_booster_, matrix)
        spend = predict_booster(self.spend_booster_, matrix)
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
