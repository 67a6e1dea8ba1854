"""Churn: P(no purchase in the horizon), an XGBoost classifier with calibrated probabilities.

Calibration (isotonic or Platt) is fitted on the validation fold (see
:mod:`training.models.base`) and chosen there by cross-fitting: each method is fitted on one
half of the fold and scored (log loss) on the other, both ways; the better method is then
refitted on the whole fold.

Horizons other than the label horizon ``h`` use BG/NBD for the part the labels cannot see:
``P(no purchase in H) = P_xgb(no purchase in h) * P_bgnbd(none in H) / P_bgnbd(none in h)``.
For ``H > h`` the ratio is BG/NBD's P(no purchase in [h, H) | none in [0, h)), exactly the
chain rule; for ``H < h`` it is the same identity read backwards. Results are clipped to [0, 1].
"""

from __future__ import annotations

import zlib
from typing import Any, Self

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from training.models.base import (
    check_fitted,
    fit_booster,
    horizon_method,
    predict_booster,
    validation_mask,
)
from training.models.history import BtydModel
from training.models.tabular import feature_frame

__all__ = ["ChurnModel", "fit_calibrator"]

CALIBRATIONS = ("isotonic", "sigmoid")


def fit_calibrator(method: str, raw: np.ndarray, y: np.ndarray) -> Any:
    """An isotonic or Platt (logistic on the logit) map from raw to calibrated probability."""
    if method == "isotonic":
        return IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw, y)
    if method == "sigmoid":
        return LogisticRegression(C=1e6).fit(_logit(raw)[:, None], y)
    raise ValueError(f"calibration must be one of {CALIBRATIONS} or 'auto', got {method!r}")


def apply_calibrator(calibrator: Any, raw: np.ndarray) -> np.ndarray:
    if isinstance(calibrator, IsotonicRegression):
        return np.asarray(calibrator.predict(raw))
    return np.asarray(calibrator.predict_proba(_logit(raw)[:, None])[:, 1])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def choose_calibration(raw: np.ndarray, y: np.ndarray, ids: pd.Series) -> tuple[str, dict]:
    """The calibration with the lower cross-fitted log loss on the validation fold."""
    half = np.fromiter((zlib.crc32(str(i).encode()) % 2 for i in ids), int, len(ids)) == 0
    losses = {}
    for method in CALIBRATIONS:
        predicted = np.empty(len(raw))
        for fit_on in (half, ~half):
            if len(np.unique(y[fit_on])) < 2:
                predicted[~fit_on] = y[fit_on].mean()
                continue
            calibrator = fit_calibrator(method, raw[fit_on], y[fit_on])
            predicted[~fit_on] = apply_calibrator(calibrator, raw[~fit_on])
        losses[method] = float(log_loss(y, np.clip(predicted, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return min(losses, key=lambda m: losses[m]), losses


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Calibrated XGBoost churn classifier over snapshot features.

    Parameters
    ----------
    label_horizon_days : the horizon of the churn labels it is fitted on.
    horizon_days : the horizon of its predictions (default: the label horizon).
    calibration : "auto" (chosen on the validation fold), "isotonic" or "sigmoid".
    params : XGBoost parameters (see :func:`training.models.tabular.xgb_params`).
    """

    def __init__(
        self,
        *,
        label_horizon_days: int = 90,
        horizon_days: int | None = None,
        calibration: str = "auto",
        params: dict[str, Any] | None = None,
    ) -> None:
        self.label_horizon_days = label_horizon_days
        self.horizon_days = horizon_days
        self.calibration = calibration
        self.params = params

    def fit(self, X: pd.DataFrame, y: Any) -> Self:
        target = np.asarray(y, dtype=int)
        if len(np.unique(target)) < 2:
            raise ValueError(
                f"churn labels have a single class ({int(target[0]) if len(target) else '-'} "
                "for every customer): nothing to learn; use more customers or another horizon"
            )
        valid = validation_mask(X)
        params = {**(self.params or {}), "objective": "binary:logistic", "eval_metric": "logloss"}
        # Longer since the last purchase never lowers the risk (what a marketer would expect).
        monotone = {"days_since_last_purchase": 1}
        self.encoder_, self.booster_ = fit_booster(params, X, target, valid, monotone)
        raw = self._raw(X[valid])
        ids = X.loc[valid, "customer_id"] if "customer_id" in X else pd.Series(np.arange(len(raw)))
        if self.calibration == "auto":
            self.calibration_, self.calibration_losses_ = choose_calibration(
                raw, target[valid], ids
            )
        else:
            self.calibration_, self.calibration_losses_ = self.calibration, {}
        self.calibrator_ = fit_calibrator(self.calibration_, raw, target[valid])
        self.btyd_ = BtydModel().fit(
            X, target, label_horizon_days=self.label_horizon_days, labels="churned"
        )
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = np.array(feature_frame(X).columns, dtype=object)
        return self

    def _raw(self, X: pd.DataFrame) -> np.ndarray:
        matrix = self.encoder_.transform(feature_frame(X))
        return predict_booster(self.booster_, matrix)

    def churn_probability(self, X: pd.DataFrame, horizon_days: int | None = None) -> np.ndarray:
        """Calibrated P(no purchase in the horizon) for each row of ``X``."""
        check_fitted(self)
        p = apply_calibrator(self.calibrator_, self._raw(X))
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        if wanted != self.label_horizon_days:
            ratio = self.btyd_.probability_no_purchase(X, wanted) / np.maximum(
                self.btyd_.probability_no_purchase(X, self.label_horizon_days), 1e-12
            )
            p = p * ratio
        return np.clip(p, 0.0, 1.0)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.churn_probability(X)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.churn_probability(X) >= 0.5).astype(int)

    def method(self, horizon_days: int | None = None) -> str:
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        calibrated = f"{self.calibration_}-calibrated "
        return calibrated + horizon_method(
            self.label_horizon_days, wanted, "the BG/NBD ratio P(none in H) / P(none in h)"
        )

    def predict_frame(self, X: pd.DataFrame, horizon_days: int | None = None) -> pd.DataFrame:
        """The pyfunc output: one ``churn_probability`` column."""
        return pd.DataFrame({"churn_probability": self.churn_probability(X, horizon_days)})

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """XGBoost's native per-row SHAP values (bias last), on the raw margin."""
        check_fitted(self)
        matrix = xgb.DMatrix(self.encoder_.transform(feature_frame(X)))
        return np.asarray(self.booster_.predict(matrix, pred_contribs=True))
