"""Next stage: a multiclass XGBoost over the lifecycle stages of :mod:`features.stages`.

Probabilities come for every stage in ``STAGES`` order (a stage never seen in training gets
0). Horizons other than the label horizon ``h`` are reached with the Markov chain of the
training folds: ``P(H) = P_xgb(h) @ M_h ** ((H - h) / h)`` for ``H > h``; for ``H < h`` the
chain alone, from the current stage, ``onehot(stage) @ M_h ** (H / h)``.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from features.stages import STAGES
from training.baselines import MarkovStageModel, step_matrix
from training.models.base import (
    Split,
    check_fitted,
    fit_booster,
    horizon_method,
    predict_booster,
    validation_split,
)
from training.models.tabular import feature_frame

__all__ = ["StageModel"]


class StageModel(ClassifierMixin, BaseEstimator):
    """Multiclass XGBoost: the stage at ``as_of + horizon`` from the features at ``as_of``."""

    def __init__(
        self,
        *,
        label_horizon_days: int = 90,
        horizon_days: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.label_horizon_days = label_horizon_days
        self.horizon_days = horizon_days
        self.params = params

    def fit(self, X: pd.DataFrame, y: Any) -> Self:
        labels = np.asarray(y, dtype=object)
        unknown = sorted(set(labels) - set(STAGES))
        if unknown:
            raise ValueError(f"next-stage labels {unknown} are not stages {list(STAGES)}")
        seen = [s for s in STAGES if s in set(labels)]
        if len(seen) < 2:
            raise ValueError(f"next-stage labels have a single class ({seen}): nothing to learn")
        self.fitted_stages_ = seen
        target = np.array([seen.index(s) for s in labels])
        split = validation_split(X, self.label_horizon_days)
        if len(np.unique(target[split.fit])) < len(seen):  # every class must be in the fit rows
            split = Split.complement(_last_fifth(len(target)))
        params = {
            **(self.params or {}),
            "objective": "multi:softprob",
            "num_class": len(seen),
            "eval_metric": "mlogloss",
        }
        self.encoder_, self.booster_ = fit_booster(params, X, target, split)
        self.markov_ = MarkovStageModel(STAGES).fit(X["stage"].astype(str), labels)
        self.classes_ = np.array(STAGES, dtype=object)
        self.feature_names_in_ = np.array(feature_frame(X).columns, dtype=object)
        return self

    def _xgb_proba(self, X: Any, matrix: np.ndarray | None = None) -> np.ndarray:
        if matrix is None:
            matrix = self.encoder_.transform(feature_frame(X))
        fitted = predict_booster(self.booster_, matrix).reshape(matrix.shape[0], -1)
        out = np.zeros((matrix.shape[0], len(STAGES)))
        for j, stage in enumerate(self.fitted_stages_):
            out[:, STAGES.index(stage)] = fitted[:, j]
        return out

    def stage_probabilities(
        self, X: Any, horizon_days: int | None = None, matrix: np.ndarray | None = None
    ) -> np.ndarray:
        """P(stage after the horizon) per row, columns in ``STAGES`` order.

        ``matrix`` is ``X`` already encoded by an encoder with the same feature names, if at
        hand (the service encodes once for the churn and stage models).
        """
        check_fitted(self)
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        h = self.label_horizon_days
        if wanted == h:
            return self._xgb_proba(X, matrix)
        if wanted > h:
            return self._xgb_proba(X, matrix) @ step_matrix(self.markov_.matrix_, (wanted - h) / h)
        onehot = np.vstack([_onehot(s) for s in np.asarray(X["stage"]).astype(str)])
        return onehot @ step_matrix(self.markov_.matrix_, wanted / h)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.stage_probabilities(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(STAGES, dtype=object)[self.stage_probabilities(X).argmax(axis=1)]

    def method(self, horizon_days: int | None = None) -> str:
        wanted = horizon_days or self.horizon_days or self.label_horizon_days
        if wanted < self.label_horizon_days:
            return f"Markov chain of {self.label_horizon_days}-day transitions, to {wanted} days"
        return horizon_method(
            self.label_horizon_days, wanted, "steps of the Markov transition matrix"
        )

    def predict_frame(self, X: pd.DataFrame, horizon_days: int | None = None) -> pd.DataFrame:
        """The pyfunc output: ``next_stage`` and ``probability_<stage>`` for every stage."""
        proba = self.stage_probabilities(X, horizon_days)
        frame = pd.DataFrame({"next_stage": np.asarray(STAGES, dtype=object)[proba.argmax(1)]})
        for j, stage in enumerate(STAGES):
            frame[f"probability_{stage}"] = proba[:, j]
        return frame


def _onehot(stage: str) -> np.ndarray:
    row = np.zeros(len(STAGES))
    if stage in STAGES:
        row[STAGES.index(stage)] = 1.0
    else:
        row[:] = 1 / len(STAGES)
    return row


def _last_fifth(n: int) -> np.ndarray:
    return np.arange(n) % 5 == 4
