"""Time-ordered backtest folds over cutoff dates, purged of overlapping label windows.

A fold is a cutoff ``t``: features from ``[.., t)``, labels from ``[t, t + horizon)``. The
latest cutoff, ``as_of - horizon``, is the evaluation fold: tuning and model selection never
see it. A model scored on a cutoff is fitted only on cutoffs whose label windows end by it
(:meth:`Folds.fitted_before`), as it would be in production: a model scoring today has seen
no outcome after today. So the training cutoffs start one horizon before the evaluation fold
and step back from there; every label window ends on or before ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from clm.errors import DataError

__all__ = [
    "Folds",
    "backtest_folds",
    "longest_purged_horizon",
    "purged_history_days",
    "tuning_needs",
]


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
        return self.fitted_before(self.evaluation)

    def fitted_before(self, cutoff: date) -> tuple[date, ...]:
        """The cutoffs whose label windows end by ``cutoff``: what a model scored there may
        be fitted on."""
        window = timedelta(days=self.horizon_days)
        return tuple(c for c in self.cutoffs if c + window <= cutoff)


def purged_history_days(horizon_days: int, min_history_days: int) -> int:
    """The history two purged cutoffs need: ``min_history_days`` before the training cutoff,
    its label window, then the evaluation fold's."""
    return min_history_days + 2 * horizon_days


def tuning_needs(horizon_days: int, step_days: int, min_history_days: int) -> tuple[int, int]:
    """The folds and days of history a purged walk forward needs: one training cutoff a
    whole horizon before the latest one, so that it scores a model fitted without overlap."""
    steps_back = -(-horizon_days // step_days)
    days = purged_history_days(horizon_days, min_history_days) + steps_back * step_days
    return steps_back + 2, days


def longest_purged_horizon(history_days: int, min_history_days: int) -> int:
    """The longest horizon :func:`backtest_folds` can label in ``history_days``."""
    return (history_days - min_history_days) // 2


def backtest_folds(
    *,
    first_day: date,
    as_of: date,
    horizon_days: int,
    folds: int,
    step_days: int,
    min_history_days: int,
) -> Folds:
    """The evaluation fold at ``as_of - horizon_days`` and up to ``folds - 1`` training
    cutoffs ``step_days`` apart, the latest one horizon before the evaluation fold.

    Cutoffs closer than ``min_history_days`` to the first record are dropped; at least one
    training cutoff must remain, else a DataError says how much history is needed.
    """
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}")
    window = timedelta(days=horizon_days)
    evaluation = as_of - window
    earliest_allowed = first_day + timedelta(days=min_history_days)
    training = [evaluation - window - timedelta(days=step_days * i) for i in range(folds - 1)]
    usable = sorted(c for c in training if c >= earliest_allowed)
    if not usable:
        history = (as_of - first_day).days
        raise DataError(
            f"too little history for a {horizon_days}-day horizon before {as_of:%Y-%m-%d}: "
            f"the data start {first_day:%Y-%m-%d} ({history} days earlier); a training cutoff "
            f"needs {min_history_days} days of history before it and its label window to end "
            f"by the evaluation fold, whose label window ends at as_of, i.e. at least "
            f"{purged_history_days(horizon_days, min_history_days)} days"
        )
    return Folds((*usable, evaluation), horizon_days)
