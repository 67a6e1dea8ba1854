"""Labels from [as_of, as_of + horizon): boundaries annotated row by row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clm.settings import ClmSettings
from tests.helpers import ev, features, tx

AS_OF = "2024-07-01"  # churn/stage window [2024-07-01, 2024-09-29); CLV window to 2025-07-01


def settings() -> ClmSettings:
    s = ClmSettings()
    s.labels.churn_horizon_days = 90
    s.labels.stage_horizon_days = 90
    s.labels.clv_horizon_days = 365
    return s


LOG = [
    tx("A", "2024-03-01", 10.0),
    tx("A", "2024-07-01T00:00:00", 30.0),  # first instant of the window: counts
    tx("A", "2024-07-01T15:00:00", 5.0),  # same purchase day
    tx("A", "2024-08-01", -5.0),  # refund: net spend
    tx("B", "2024-03-01", 10.0),
    tx("B", "2024-09-29T00:00:00", 50.0),  # first instant after the 90-day window
    tx("C", "2024-03-01", 10.0),
    tx("C", "2024-04-01", 10.0),
    tx("C", "2024-07-10", 10.0),
    tx("Z", "2025-07-01", 1.0),  # the data runs long enough for the 365-day window
]
EVENTS = [ev("C", "2024-07-11", "cancel"), ev("V", "2024-06-01", "visit")]


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return features(
        tmp_path_factory.mktemp("labels"),
        AS_OF,
        settings=settings(),
        labels=True,
        transactions=LOG,
        events=EVENTS,
    )


def test_churn_label_window_boundaries(snap) -> None:  # type: ignore[no-untyped-def]
    assert snap.loc["A"].label_churned == 0
    assert snap.loc["B"].label_churned == 1  # bought only at as_of + 90 days
    assert snap.loc["V"].label_churned == 1  # no purchase at all


def test_cancel_after_the_last_purchase_in_the_window_is_churn(snap) -> None:  # type: ignore[no-untyped-def]
    assert snap.loc["C"].label_churned == 1


def test_purchases_and_spend_over_the_clv_horizon(snap) -> None:  # type: ignore[no-untyped-def]
    assert snap.loc["A"].label_purchases == 1  # two orders, one purchase day
    assert snap.loc["A"].label_spend == pytest.approx(30.0)  # 35 minus the 5 refund
    assert snap.loc["B"].label_purchases == 1  # inside the 365-day window
    assert snap.loc["V"].label_spend == 0.0


def test_next_stage_is_the_stage_at_the_horizon(snap) -> None:  # type: ignore[no-untyped-def]
    assert snap.loc["A"].stage == "purchase" and snap.loc["A"].label_next_stage == "retention"
    assert snap.loc["C"].label_next_stage == "churned"  # the cancel
    assert snap.loc["V"].label_next_stage == "awareness"


def test_only_customers_known_before_the_cutoff(snap) -> None:  # type: ignore[no-untyped-def]
    assert "Z" not in snap.index
    assert sorted(snap.index) == ["A", "B", "C", "V"]


def test_label_window_past_the_data_is_an_error(tmp_path: Path) -> None:
    from clm.errors import DataError

    with pytest.raises(DataError, match="365-day label window ends 2025-07-01, after the last"):
        features(tmp_path, AS_OF, settings=settings(), labels=True, transactions=LOG[:-1])


def test_each_label_uses_its_own_horizon(tmp_path: Path) -> None:
    s = settings()
    s.labels.churn_horizon_days = 5  # [2024-07-01, 2024-07-06)
    snap = features(tmp_path, AS_OF, settings=s, labels=True, transactions=LOG, events=EVENTS)
    assert snap.loc["A"].label_churned == 0  # bought on 2024-07-01
    assert snap.loc["C"].label_churned == 1  # next purchase only on 2024-07-10
    assert snap.loc["C"].label_next_stage == "churned"  # still the 90-day stage horizon
    assert snap.loc["B"].label_purchases == 1  # and the 365-day CLV horizon


def test_days_to_first_purchase_in_the_churn_window(snap) -> None:  # type: ignore[no-untyped-def]
    assert snap.loc["A"].label_days_to_purchase == 0  # bought on the first day of the window
    assert snap.loc["C"].label_days_to_purchase == 9  # 2024-07-10, despite churning by cancel
    assert pd.isna(snap.loc["B"].label_days_to_purchase)  # its purchase is after the window
    assert pd.isna(snap.loc["V"].label_days_to_purchase)  # no purchase at all
