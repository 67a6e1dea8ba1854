"""RFM exact values on a hand-made log, window boundaries annotated row by row."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.helpers import features, tx

AS_OF = "2024-07-01"  # windows: 30d starts 2024-06-01, 90d starts 2024-04-02

LOG = [
    tx("A", "2024-01-01T10:00:00", 50.0),  # purchase day 1 (two orders, 80 in all)
    tx("A", "2024-01-01T18:00:00", 30.0),
    tx("A", "2024-03-01T12:00:00", 100.0),  # purchase day 2
    tx("A", "2024-03-05T09:00:00", -40.0),  # refund: not a purchase day
    tx("A", "2024-05-31T23:59:59", 10.0),  # day 3: inside 90d, one second outside 30d
    tx("A", "2024-06-01T00:00:00", 20.0),  # day 4: first instant of the 30d window
    tx("A", "2024-07-01T00:00:00", 999.0),  # at as_of: excluded
    tx("B", "2023-12-01T08:00:00", 25.0),  # a single old purchase
    tx("R", "2024-02-01T08:00:00", -5.0),  # only a refund: no purchase day
]


@pytest.fixture(scope="module")
def rfm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return features(tmp_path_factory.mktemp("rfm"), AS_OF, transactions=LOG)


def test_frequency_counts_purchase_days_not_orders(rfm) -> None:  # type: ignore[no-untyped-def]
    a = rfm.loc["A"]
    assert a.purchase_days == 4
    assert a.repeat_purchase_days == 3
    assert a.orders == 5


def test_recency_and_tenure_in_days(rfm) -> None:  # type: ignore[no-untyped-def]
    a = rfm.loc["A"]
    assert a.days_since_first_purchase == 182  # 2024-01-01 -> 2024-07-01 (leap year)
    assert a.days_since_last_purchase == 30  # 2024-06-01
    assert a.days_between_first_and_last_purchase == 152
    assert rfm.loc["B"].days_since_last_purchase == 213


def test_spend_per_purchase_day(rfm) -> None:  # type: ignore[no-untyped-def]
    a = rfm.loc["A"]
    assert a.first_purchase_spend == pytest.approx(80.0)
    assert a.last_purchase_spend == pytest.approx(20.0)
    assert a.mean_purchase_spend == pytest.approx((80 + 100 + 10 + 20) / 4)
    assert a.max_purchase_spend == pytest.approx(100.0)
    assert a.total_spend == pytest.approx(210.0)
    assert a.net_spend == pytest.approx(170.0)


def test_window_boundaries(rfm) -> None:  # type: ignore[no-untyped-def]
    a = rfm.loc["A"]
    assert (a.purchases_30d, a.spend_30d) == (1, pytest.approx(20.0))
    assert (a.purchases_90d, a.spend_90d) == (2, pytest.approx(30.0))
    assert (a.purchases_365d, a.spend_365d) == (4, pytest.approx(210.0))


def test_inter_purchase_interval_and_regularity(rfm) -> None:  # type: ignore[no-untyped-def]
    gaps = [60, 91, 1]
    a = rfm.loc["A"]
    assert a.mean_days_between_purchases == pytest.approx(statistics.mean(gaps))
    assert a.days_between_purchases_cv == pytest.approx(
        statistics.stdev(gaps) / statistics.mean(gaps)
    )
    b = rfm.loc["B"]
    assert b.mean_days_between_purchases != b.mean_days_between_purchases  # NaN: no gap yet


def test_refunds(rfm) -> None:  # type: ignore[no-untyped-def]
    assert rfm.loc["A"].refund_count == 1
    assert rfm.loc["A"].refund_share_of_spend == pytest.approx(40 / 210)
    r = rfm.loc["R"]
    assert (r.purchase_days, r.refund_count, r.total_spend, r.net_spend) == (0, 1, 0.0, -5.0)


def test_customer_without_transactions_gets_zero_counts_and_missing_recency(tmp_path: Path) -> None:
    frame = features(
        tmp_path,
        AS_OF,
        transactions=[tx("A", "2024-01-01", 5.0)],
        events=[{"customer_id": "V", "timestamp": "2024-06-01", "event_type": "visit"}],
    )
    v = frame.loc["V"]
    assert (v.purchase_days, v.orders, v.total_spend, v.purchases_90d) == (0, 0, 0.0, 0)
    assert v.days_since_last_purchase != v.days_since_last_purchase
