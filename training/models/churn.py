"""Churn: P(no purchase in the horizon), an XGBoost classifier with calibrated probabilities.

Calibration (isotonic or Platt) is fitted on the validation rows, a fifth of the customers at
the latest cutoff (see :mod:`training.models.base`), and chosen there by cross-fitting: each
method is fitted on one half of those rows and scored (log loss) on the other, both ways; the
better method is then refitted on all of them.

Horizons other than the label horizon ``h``. When the snapshots carry
``label_days_to_purchase`` (training snapshots do), a second calibrated classifier is fitted
for the half horizon ``h/2``. The two calibrated survivals ``u = P(none in h/2)`` and
``v = P(none in h)`` of each customer fix a two-point "dead or alive" curve,
``S(t) = pi + (1 - pi) * w ** (t / h)`` (a share ``pi`` never buys again, the others buy as a
Poisson process, ``w = (v - pi) / (1 - pi)``), which passes through both points:
``pi = (v - u**2) / ((1 - u)**2 + v - u**2)``, clipped to ``[0, v]`` (0 when the hazard
rises, i.e. ``v < u**2``; ``u`` is first raised to ``v`` where the two disagree). ``S(H)``
is the prediction for any other horizon ``H``. Measured on
the sample data, survival barely falls after a long silence (those who have not bought for
months rarely return): the curve keeps that, where BG/NBD fitted on a short history (no
dropout seen yet) lets everyone return.

Without that label, the BG/NBD ratio is used:
``P(no purchase in H) = P_xgb(no purchase in h) * P_bgnbd(none in H) / P_bgnbd(none in h)``.
"""

from __future__ import annotations

import zlib
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from training.models import native, treeshap
from training.models.base import (
    Split,
    check_fitted,
    fit_booster,
    horizon_method,
    predict_booster,
    validation_split,
)
from training.models.history import BtydModel
from training.models.tabular import feature_frame

__all__ = ["ChurnModel", "fit_calibrator", "survival_curve"]

CALIBRATIONS = ("isotonic", "sigmoid")
HALF_LABEL = "label_days_to_purchase"


def survival_curve(u: np.ndarray, v: np.ndarray, ratio: float) -> np.ndarray:
    """``S(ratio * h)`` of the dead-or-alive curve through ``S(h/2) = u`` and ``S(h) = v``.

    The two are calibrated apart, so ``u < v`` happens (no purchase in h/2 less likely than
    none in h): ``u`` is raised to ``v``, so that the curve still passes through ``S(h) = v``,
    the trained horizon's own prediction, and never rises with the horizon."""
    v = np.clip(np.asarray(v, dtype=float), 0.0, 1.0)
    given = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    flat = given <= v  # then S(t) = v for every t > 0 (computed below only to rounding)
    u = np.maximum(given, v)
    rising = v - u**2
    with np.errstate(invalid="ignore", divide="ignore"):
        dead = np.where(rising > 0, rising / ((1 - u) ** 2 + rising), 0.0)
    dead = np.clip(np.nan_to_num(dead, nan=1.0), 0.0, v)
    with np.errstate(invalid="ignore", divide="ignore"):
        alive = np.where(dead < 1, (v - dead) / (1 - dead), 1.0)
    curve = np.clip(dead + (1 - dead) * np.clip(alive, 0.0, 1.0) ** ratio, 0.0, 1.0)
    return np.where(flat & (ratio > 0), v, curve)


def fit_calibrator(method: str, raw: np.ndarray, y: np.ndarray) -> Any:
    """An isotonic or Platt (logistic on the logit) map from raw to calibrated probability."""
    if method == "isotonic":
        # Never exactly 0 or 1: a block of validation rows that all churned (or none did) is
        # no certainty; bounded as Laplace's rule bounds a rate seen in all of n rows.
        edge = 1.0 / (len(raw) + 2)
        return IsotonicRegression(y_min=edge, y_max=1 - edge, out_of_bounds="clip").fit(raw, y)
    if method == "sigmoid":
        return LogisticRegression(C=1e6).fit(_logit(raw)[:, None], y)
    raise ValueError(f"calibration must be one of {CALIBRATIONS} or 'auto', got {method!r}")


def apply_calibrator(calibrator: Any, raw: np.ndarray) -> np.ndarray:
    """The calibrated probability; the same numbers as the calibrator's own ``predict``
    (``predict_proba``), computed directly: scikit-learn's input checks cost more than the
    arithmetic for the few rows of a service request."""
    raw = np.asarray(raw, dtype=float)
    if isinstance(calibrator, IsotonicRegression):
        # IsotonicRegression.predict with out_of_bounds="clip": linear between thresholds.
        return np.interp(raw, calibrator.X_thresholds_, calibrator.y_thresholds_)
    z = _logit(raw) * float(calibrator.coef_[0, 0]) + float(calibrator.intercept_[0])
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


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

    def fit(self, X: pd.DataFrame, y: Any, present: pd.DataFrame | None = None) -> Self:
        """Fit on the snapshots ``X`` and churn flags ``y``. BG/NBD (the baseline, and the
        rescaling to other horizons) is fitted on ``present``, the customers at the cutoff
        it scores (features only), or without it on the latest cutoff in ``X``."""
        target = np.asarray(y, dtype=int)
        if len(np.unique(target)) < 2:
            raise ValueError(
                f"churn labels have a single class ({int(target[0]) if len(target) else '-'} "
                "for every customer): nothing to learn; use more customers or another horizon"
            )
        split = validation_split(X, self.label_horizon_days, target)
        valid = split.valid
        ids = X.loc[valid, "customer_id"] if "customer_id" in X else pd.Series(range(valid.sum()))
        self.encoder_, self.booster_, self.calibration_, self.calibrator_, losses = (
            self._fit_calibrated(X, target, split, ids, self.calibration)
        )
        self.calibration_losses_ = losses
        self.half_: tuple[Any, Any] | None = None
        if HALF_LABEL in X.columns and self.label_horizon_days >= 2:
            days = pd.to_numeric(X[HALF_LABEL]).to_numpy(dtype=float, na_value=np.nan)
            half = (target == 1) | ~(days < self.label_horizon_days / 2)
            if len(np.unique(half)) == 2:
                _, booster, _, calibrator, _ = self._fit_calibrated(
                    X, half.astype(int), split, ids, self.calibration_
                )
                self.half_ = (booster, calibrator)
        self.btyd_ = BtydModel().fit(
            X, target, label_horizon_days=self.label_horizon_days, labels="churned",
            population=present,
        )  # fmt: skip
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = np.array(feature_frame(X).columns, dtype=object)
        return self

    def _fit_calibrated(
        self, X: pd.DataFrame, target: np.ndarray, split: Split, ids: pd.Series, method: str
    ) -> tuple[Any, Any, str, Any, dict]:
        """Booster fitted on ``split.fit``, calibrated on ``split.valid`` (method chosen)."""
        params = {**(self.params or {}), "objective": "binary:logistic", "eval_metric": "logloss"}
        # Longer since the last purchase never lowers the risk (what a marketer would expect).
        monotone = {"days_since_last_purchase": 1}
        encoder, booster = fit_booster(params, X, target, split, monotone)
        valid = split.valid
        raw = predict_booster(booster, encoder.transform(feature_frame(X[valid])))
        losses: dict = {}
        if method == "auto":
            method, losses = choose_calibration(raw, target[valid], ids)
        return encoder, booster, method, fit_calibrator(method, raw, target[valid]), losses

    def _raw(self, X: Any) -> np.ndarray:
        matrix = self.encoder_.transform(feature_frame(X))
        return predict_booster(self.booster_, matrix)

    def churn_probability(self, X: Any, horizon_days: int | None = None) -> np.ndarray:
        """Calibrated P(no purchase in the horizon) for each row of ``X``."""
        check_fitted(self)
        matrix = self.encoder_.transform(feature_frame(X))
        return self._probability(X, matrix, predict_booster(self.booster_, matrix), horizon_days)

    def scores(
        self,
        X: Any,
        matrix: np.ndarray | None = None,
        horizon_days: int | None = None,
        *,
        approx_contributions: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Churn probability and XGBoost's native contributions (bias last) in one pass.

        Exact and approximate contributions come from :mod:`training.models.treeshap` (the
        same values, several times faster) where it covers the booster, else from XGBoost.

        The raw probability is the logistic of the contributions' sum (exact or approximate,
        they add up to the margin), so the booster is walked once. ``matrix`` is the encoded
        ``X`` if at hand.
        """
        check_fitted(self)
        if matrix is None:
            matrix = self.encoder_.transform(feature_frame(X))
        explain = treeshap.approx_explainer if approx_contributions else treeshap.explainer
        compiled = explain(self.booster_)
        if compiled is not None:  # XGBoost's values, compiled (training.models.treeshap)
            contributions = compiled.contributions(matrix)
        else:
            contributions = np.asarray(
                native.contributions(self.booster_, matrix, approx_contributions), dtype=float
            )
        raw = 1.0 / (1.0 + np.exp(-contributions.sum(axis=1)))
        return self._probability(X, matrix, raw, horizon_days), contributions

    def _probability(
        self, X: Any, matrix: np.ndarray, raw: np.ndarray, horizon_days: int | None
    ) -> np.ndarray:
        p = apply_calibrator(self.calibrator_, raw)
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        if wanted == self.label_horizon_days:
            return np.clip(p, 0.0, 1.0)
        if self.half_ is not None:
            booster, calibrator = self.half_
            u = apply_calibrator(calibrator, predict_booster(booster, matrix))
            return survival_curve(u, p, wanted / self.label_horizon_days)
        ratio = self.btyd_.probability_no_purchase(X, wanted) / np.maximum(
            self.btyd_.probability_no_purchase(X, self.label_horizon_days), 1e-12
        )
        return np.clip(p * ratio, 0.0, 1.0)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.churn_probability(X)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.churn_probability(X) >= 0.5).astype(int)

    def method(self, horizon_days: int | None = None) -> str:
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        calibrated = f"{self.calibration_}-calibrated "
        if self.half_ is not None:
            h = self.label_horizon_days
            how = f"the dead-or-alive survival curve through its {h}- and {h / 2:g}-day models"
        else:
            how = "the BG/NBD ratio P(none in H) / P(none in h)"
        return calibrated + horizon_method(self.label_horizon_days, wanted, how)

    def predict_frame(self, X: pd.DataFrame, horizon_days: int | None = None) -> pd.DataFrame:
        """The pyfunc output: one ``churn_probability`` column."""
        return pd.DataFrame({"churn_probability": self.churn_probability(X, horizon_days)})
