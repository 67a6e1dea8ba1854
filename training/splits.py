"""Time-ordered backtest folds over cutoff dates.

A fold is a cutoff ``t``: features from ``[.., t)``, labels from ``[t, t + horizon)``. Every
label window ends on or before ``as_of``, so nothing at or after ``as_of`` is read, and the
latest cutoff is the evaluation fold: tuning and model selection never see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from clm.errors import DataError

__all__ = ["Folds", "backtest_folds", "labelable_horizon"]


@dataclass(frozen=True)
class Folds:
    """Cutoffs in time order; the last is the evaluation fold."""

    cutoffs: tuple[date, ...]
    horizon_days: int

    @property
    def evaluation(self) -> date:
        return self.cutoffs[-1]

    @property
    def training(self) -> tuple[date, ...]:
        return self.cutoffs[:-1]


def labelable_horizon(*, first_day: date, as_of: date, min_history_days: int) -> int:
    """The longest horizon with one full label window after ``min_history_days`` of history."""
    return (as_of - first_day).days - min_history_days


def backtest_folds(
    *,
    first_day: date,
    as_of: date,
    horizon_days: int,
    folds: int,
    step_days: int,
    min_history_days: int,
) -> Folds:
    """Up to ``folds`` cutoffs ``step_days`` apart, the latest at ``as_of - horizon_days``.

    Cutoffs closer than ``min_history_days`` to the first record are dropped; at least two
    must remain (one to train on, one to evaluate), else a DataError says what is missing.
    """
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}")
    latest = as_of - timedelta(days=horizon_days)
    earliest_allowed = first_day + timedelta(days=min_history_days)
    cutoffs = [latest - timedelta(days=step_days * i) for i in range(folds)]
    usable = sorted(c for c in cutoffs if c >= earliest_allowed)
    if len(usable) < 2:
        history = (as_of - first_day).days
        raise DataError(
            f"too little history for a {horizon_days}-day horizon before {as_of:%Y-%m-%d}: "
            f"the data start {first_day:%Y-%m-%d} ({history} days earlier); two backtest cutoffs "
            f"{step_days} days apart need {min_history_days} days of history before the first "
            f"and a full label window after the last, i.e. at least "
            f"{min_history_days + step_days + horizon_days} days"
        )
    return Folds(tuple(usable), horizon_days)
