from __future__ import annotations

from datetime import date, timedelta

import pytest

from clm.errors import DataError
from training.splits import backtest_folds, longest_purged_horizon, tuning_needs


def test_training_label_windows_end_by_the_evaluation_fold_whose_window_ends_at_as_of() -> None:
    folds = backtest_folds(
        first_day=date(2023, 1, 1), as_of=date(2025, 7, 1), horizon_days=90,
        folds=4, step_days=60, min_history_days=90,
    )  # fmt: skip
    assert folds.cutoffs == (
        date(2024, 9, 4), date(2024, 11, 3), date(2025, 1, 2), date(2025, 4, 2),
    )  # fmt: skip
    # 2025-04-02 + 90 days = 2025-07-01: the evaluation fold's label window ends at as_of.
    assert folds.evaluation + timedelta(days=90) == date(2025, 7, 1)
    # The latest training cutoff's window ends exactly where the evaluation fold starts.
    assert date(2025, 1, 2) + timedelta(days=90) == folds.evaluation
    assert folds.training == folds.cutoffs[:-1]
    # Walking forward: 2025-01-02 may be scored by a fit on 2024-09-04 only (2024-11-03's
    # labels run to 2025-02-01, past it); the earlier ones have nothing before them.
    assert folds.fitted_before(date(2025, 1, 2)) == (date(2024, 9, 4),)
    assert folds.fitted_before(date(2024, 11, 3)) == ()


def test_cutoffs_without_enough_history_are_dropped() -> None:
    folds = backtest_folds(
        first_day=date(2025, 1, 1), as_of=date(2025, 12, 1), horizon_days=90,
        folds=6, step_days=60, min_history_days=90,
    )  # fmt: skip
    # Evaluation 2025-09-02, training from 2025-06-04 back in 60-day steps; 2025-04-01 is the
    # earliest with 90 days of history, so 2025-04-05 is the only other one kept.
    assert folds.cutoffs == (date(2025, 4, 5), date(2025, 6, 4), date(2025, 9, 2))


def test_too_little_history_names_the_days_needed() -> None:
    # 273 + 273 + 90 = 636 days; the data hold 273.
    with pytest.raises(DataError, match=r"273-day horizon .* \(273 days earlier\).* at least 636"):
        backtest_folds(
            first_day=date(2025, 1, 1), as_of=date(2025, 10, 1), horizon_days=273,
            folds=4, step_days=60, min_history_days=90,
        )  # fmt: skip
    assert longest_purged_horizon(273, 90) == 91
    folds = backtest_folds(
        first_day=date(2025, 1, 1), as_of=date(2025, 10, 1), horizon_days=91,
        folds=4, step_days=60, min_history_days=90,
    )  # fmt: skip
    assert folds.cutoffs == (date(2025, 4, 2), date(2025, 7, 2))


@pytest.mark.parametrize(
    ("horizon", "step", "folds", "days"), [(90, 60, 4, 390), (365, 60, 9, 1240)]
)
def test_tuning_needs_a_training_cutoff_a_whole_horizon_before_the_latest(
    horizon: int, step: int, folds: int, days: int
) -> None:
    assert tuning_needs(horizon, step, 90) == (folds, days)
    first_day = date(2020, 1, 1)
    enough = backtest_folds(
        first_day=first_day, as_of=first_day + timedelta(days=days), horizon_days=horizon,
        folds=folds, step_days=step, min_history_days=90,
    )  # fmt: skip
    assert any(enough.fitted_before(c) for c in enough.training)
    short = backtest_folds(
        first_day=first_day, as_of=first_day + timedelta(days=days - 1), horizon_days=horizon,
        folds=folds, step_days=step, min_history_days=90,
    )  # fmt: skip
    assert not any(short.fitted_before(c) for c in short.training)


def test_training_says_when_most_cutoffs_are_left_out_for_too_little_history() -> None:
    from clm.settings import ClmSettings
    from training.jobs import plan_folds

    start, as_of = date(2023, 1, 1), date(2025, 7, 1)
    warnings: list[str] = []
    churn = plan_folds(start, as_of, 90, ClmSettings(), warnings)
    assert len(churn.training) == 3 and warnings == []
    # A year's labels: the evaluation fold 2024-07-01, training cutoffs 2023-07-02,
    # 2023-05-03 and 2023-03-04; the last has 62 days of history, under the 90 needed. Two
    # of three kept: the usual case, not warned about.
    clv = plan_folds(start, as_of, 365, ClmSettings(), warnings)
    assert clv.training == (date(2023, 5, 3), date(2023, 7, 2)) and warnings == []
    # A step too wide for the history (or too little of it) keeps one.
    wide = ClmSettings(training={"fold_step_days": 800})  # type: ignore[arg-type]
    assert len(plan_folds(start, as_of, 90, wide, warnings).training) == 1
    assert warnings == [
        "90-day labels: 1 of the 3 training cutoffs (training.folds 4, 800 days apart) have "
        "the 90 days of history (training.min_history_days) a cutoff needs; the others, "
        "before 2023-04-01, are left out"
    ]
    plan_folds(start, as_of, 90, wide, warnings)  # the stage model's horizon too: said once
    assert len(warnings) == 1
