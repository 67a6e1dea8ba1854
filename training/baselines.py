"""Baselines logged beside each model on the same evaluation fold.

* churn: days since the last purchase (mapped to a probability by isotonic regression on the
  training folds, so its log loss means something; prospects rank as the most inactive), and
  BG/NBD's P(no purchase in the horizon) (not 1 - P(alive), which ranks new one-time buyers
  as safe while most of them never return);
* next stage: the empirical stage-to-stage transition matrix (a Markov chain);
* CLV: BG/NBD x Gamma-Gamma (:class:`training.models.history.BtydModel`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Self

import numpy as np
import pandas as pd
from scipy.linalg import fractional_matrix_power
from sklearn.isotonic import IsotonicRegression

__all__ = ["MarkovStageModel", "RecencyChurnBaseline", "step_matrix"]


class RecencyChurnBaseline:
    """P(churn) as an increasing function of days since the last purchase."""

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> Self:
        self.isotonic_ = IsotonicRegression(increasing=True, out_of_bounds="clip")
        self.isotonic_.fit(self.score(X), np.asarray(y, dtype=float))
        return self

    @staticmethod
    def score(X: pd.DataFrame) -> np.ndarray:
        """Days since the last purchase; prospects (never bought) rank after every buyer,
        by days since their last event."""
        recency = pd.to_numeric(X["days_since_last_purchase"]).to_numpy(float, na_value=np.nan)
        return np.where(np.isnan(recency), 3650.0 + np.nan_to_num(_tenure(X)), recency)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """The isotonic fit plus a tie-break below 1e-7 that increases with the score: the
        fit's flat steps would tie customers whose recency differs (0.8856 against 0.8883 for
        the raw days on one fold's buyers), and the baseline ranks as recency does."""
        score = self.score(X)
        fitted = np.asarray(self.isotonic_.predict(score)) + 1e-7 * score / (1.0 + score)
        return np.clip(fitted, 1e-6, 1 - 1e-6)


def _tenure(X: pd.DataFrame) -> np.ndarray:
    if "days_since_last_event" in X.columns:
        return pd.to_numeric(X["days_since_last_event"]).to_numpy(float, na_value=0.0)
    return np.zeros(len(X))


class MarkovStageModel:
    """P(stage after the horizon | stage now): the transition matrix of the training folds.

    Laplace smoothing (``alpha`` per cell) keeps unseen transitions possible, so the log
    loss stays finite. ``predict_proba`` returns columns in ``classes`` order.
    """

    def __init__(self, classes: Sequence[str], *, alpha: float = 0.5) -> None:
        self.classes = list(classes)
        self.alpha = alpha

    def fit(self, stage_now: Iterable[str], stage_next: Iterable[str]) -> Self:
        k = len(self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        counts = np.zeros((k, k))
        for now, after in zip(stage_now, stage_next, strict=True):
            if now in index and after in index:
                counts[index[now], index[after]] += 1
        self.counts_ = counts
        smoothed = counts + self.alpha
        self.matrix_ = smoothed / smoothed.sum(axis=1, keepdims=True)
        return self

    def predict_proba(self, stage_now: Sequence[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        uniform = np.full(len(self.classes), 1 / len(self.classes))
        rows = [self.matrix_[index[s]] if s in index else uniform for s in stage_now]
        return np.vstack(rows) if rows else np.empty((0, len(self.classes)))


def step_matrix(matrix: np.ndarray, power: float) -> np.ndarray:
    """``matrix ** power`` for a row-stochastic matrix, kept row-stochastic.

    A fractional power of a transition matrix can leave the stochastic matrices (small
    negative or complex parts); they are clipped and the rows renormalised.
    """
    if power == int(power):
        return np.linalg.matrix_power(matrix, int(power))
    result = np.real(fractional_matrix_power(matrix, power))
    result = np.clip(result, 0.0, None)
    return result / result.sum(axis=1, keepdims=True)
