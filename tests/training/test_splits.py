from __future__ import annotations

from datetime import date, timedelta

import pytest

from clm.errors import DataError
from training.splits import backtest_folds


def test_every_label_window_ends_by_as_of_and_the_latest_is_evaluation() -> None:
    folds = backtest_folds(
        first_day=date(2023, 1, 1), as_of=date(2025, 7, 1), horizon_days=90,
        folds=4, step_days=60, min_history_days=90,
    )  # fmt: skip
    assert folds.cutoffs == (
        date(2024, 10, 4), date(2024, 12, 3), date(2025, 2, 1), date(2025, 4, 2),
    )  # fmt: skip
    # 2025-04-02 + 90 days = 2025-07-01: the last label window ends exactly at as_of.
    assert folds.evaluation + timedelta(days=90) == date(2025, 7, 1)
    assert folds.training == folds.cutoffs[:-1]


def test_cutoffs_without_enough_history_are_dropped() -> None:
    folds = backtest_folds(
        first_day=date(2025, 1, 1), as_of=date(2025, 12, 1), horizon_days=90,
        folds=6, step_days=60, min_history_days=90,
    )  # fmt: skip
    # 2025-09-02 and 60-day steps back; 2025-04-01 is the earliest with 90 days of history.
    assert folds.cutoffs[0] >= date(2025, 4, 1)
    assert len(folds.cutoffs) == 3


def test_too_little_history_names_the_days_needed() -> None:
    with pytest.raises(DataError, match=r"273-day horizon .* at least 423 days"):
        backtest_folds(
            first_day=date(2025, 1, 1), as_of=date(2025, 10, 1), horizon_days=273,
            folds=4, step_days=60, min_history_days=90,
        )  # fmt: skip
