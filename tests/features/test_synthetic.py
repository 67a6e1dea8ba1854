"""The sample data is deterministic and realistic: the funnel, BTYD heterogeneity, signal."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features import synthetic
from tests.conftest import SAMPLE_END, SAMPLE_START


@pytest.fixture(scope="module")
def frames(sample_data: synthetic.SyntheticData) -> dict[str, pd.DataFrame]:
    return {
        n: getattr(sample_data, n).to_pandas()
        for n in ("transactions", "events", "customers", "truth")
    }


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = synthetic.generate(500, seed=5, start=SAMPLE_START, end=SAMPLE_END)
    b = synthetic.generate(500, seed=5, start=SAMPLE_START, end=SAMPLE_END)
    c = synthetic.generate(500, seed=6, start=SAMPLE_START, end=SAMPLE_END)
    for name in ("transactions", "events", "customers"):
        assert getattr(a, name).equals(getattr(b, name))
    assert not a.transactions.equals(c.transactions)


def test_everything_inside_the_period_and_ids_unique(frames: dict[str, pd.DataFrame]) -> None:
    for name in ("transactions", "events"):
        ts = frames[name].timestamp
        assert ts.min() >= pd.Timestamp(SAMPLE_START, tz="UTC")
        assert ts.max() < pd.Timestamp(SAMPLE_END, tz="UTC")
    assert frames["transactions"].order_id.is_unique
    assert frames["customers"].customer_id.is_unique


def test_funnel_conversion_differs_by_channel(frames: dict[str, pd.DataFrame]) -> None:
    truth = frames["truth"]
    rate = truth.groupby("acquisition_channel").is_buyer.mean()
    assert rate["referral"] > rate["social"] + 0.2
    assert 0.2 < truth.is_buyer.mean() < 0.6
    leads = set(frames["customers"].customer_id)
    buyers = set(frames["transactions"].customer_id)
    assert buyers <= leads  # everyone who buys signed up first


def test_repeat_buying_is_heterogeneous(frames: dict[str, pd.DataFrame]) -> None:
    tx = frames["transactions"]
    days = tx[tx.amount > 0].assign(day=lambda f: f.timestamp.dt.date)
    per_buyer = days.groupby("customer_id").day.nunique()
    assert per_buyer.var() > 3 * per_buyer.mean()  # over-dispersed, as NBD implies
    spend = tx[tx.amount > 0].groupby("customer_id").amount.mean()
    assert spend.quantile(0.9) > 2 * spend.quantile(0.1)  # Gamma-Gamma spread
    truth = frames["truth"].set_index("customer_id")
    rate = truth.loc[per_buyer.index, "purchase_rate_per_day"]
    assert np.corrcoef(np.log(rate), np.log(per_buyer))[0, 1] > 0.4


def test_refunds_and_same_day_orders_exist(frames: dict[str, pd.DataFrame]) -> None:
    tx = frames["transactions"]
    refunds = (tx.amount < 0).mean()
    assert 0.01 < refunds < 0.06
    same_day = tx[tx.amount > 0].assign(day=tx.timestamp.dt.date).duplicated(["customer_id", "day"])
    assert same_day.mean() > 0.01


def test_holiday_season_sells_more(frames: dict[str, pd.DataFrame]) -> None:
    tx = frames["transactions"]
    tx = tx[(tx.amount > 0) & (tx.timestamp.dt.year == 2025)]
    by_month = tx.groupby(tx.timestamp.dt.month).size()
    assert by_month[12] > 1.2 * by_month[[9, 10]].mean()


def test_engagement_fades_before_dropout(frames: dict[str, pd.DataFrame]) -> None:
    truth = frames["truth"].set_index("customer_id")
    sessions = frames["events"].query("event_type == 'session'")
    start = pd.Timestamp(SAMPLE_START, tz="UTC")
    day = (sessions.timestamp - start).dt.total_seconds() / 86400
    dropout = truth.loc[sessions.customer_id, "dropout_day"].to_numpy()
    left = dropout - day.to_numpy()
    leavers = truth[truth.is_buyer & (truth.dropout_day < 900)].index
    mask = sessions.customer_id.isin(leavers).to_numpy()
    late = ((left > 0) & (left <= 30) & mask).sum() / 30
    earlier = ((left > 120) & (left <= 240) & mask).sum() / 120
    assert late < 0.7 * earlier


def test_nps_scores_and_advocacy_follow_satisfaction(frames: dict[str, pd.DataFrame]) -> None:
    events = frames["events"]
    nps = events[events.event_type == "nps"]
    assert nps.value.between(0, 10).all() and (nps.value == nps.value.round()).all()
    truth = frames["truth"].set_index("customer_id")
    mean_score = nps.groupby("customer_id").value.mean()
    lifetime = truth.loc[mean_score.index, "dropout_day"]
    promoters = lifetime[mean_score >= 9].median()
    detractors = lifetime[mean_score <= 6].median()
    assert promoters > detractors
    reviewers = set(events[events.event_type == "review"].customer_id)
    assert truth.loc[list(reviewers), "satisfaction"].mean() > truth.satisfaction.mean() + 0.5


def test_every_event_type_of_the_story_appears(frames: dict[str, pd.DataFrame]) -> None:
    assert set(frames["events"].event_type) == set(synthetic.EVENT_TYPES)


def test_csv_output_round_trips(tmp_path, sample_data: synthetic.SyntheticData) -> None:  # type: ignore[no-untyped-def]
    small = synthetic.generate(200, seed=1, start=date(2024, 1, 1), end=date(2024, 6, 1))
    paths = synthetic.write(small, tmp_path, fmt="csv")
    read = pd.read_csv(paths["transactions"])
    assert len(read) == small.transactions.num_rows
    assert read.timestamp.str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()
    assert isinstance(sample_data.transactions, pa.Table)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="customers must be at least 1"):
        synthetic.generate(0, seed=1, start=SAMPLE_START, end=SAMPLE_END)
    with pytest.raises(ValueError, match="must be after start"):
        synthetic.generate(10, seed=1, start=SAMPLE_END, end=SAMPLE_START)
