"""BtydModel's compiled paths for few rows give what its numpy expressions give."""

from __future__ import annotations

import io
import itertools
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.models import history
from training.models.history import BtydModel, summary

# The compiled pass and numpy's vector math (AVX-512 here) round apart: agree to 1e-13.
RTOL = 1e-13
COLUMNS = (
    "repeat_purchase_days",
    "days_between_first_and_last_purchase",
    "days_since_first_purchase",
    "total_spend",
    "first_purchase_spend",
)


@pytest.fixture(scope="module")
def snapshot(lifetimes_wheel: Path) -> pd.DataFrame:
    """CDNOW's customers as snapshot features in days, and 300 prospects (no purchase yet)."""
    with zipfile.ZipFile(lifetimes_wheel) as archive:
        name = "lifetimes/datasets/cdnow_customers_summary_with_transactions.csv"
        cdnow = pd.read_csv(io.BytesIO(archive.read(name)))
    first = np.random.default_rng(3).gamma(2.0, 15.0, len(cdnow))
    buyers = pd.DataFrame({
        "repeat_purchase_days": cdnow["x"].astype(float),
        "days_between_first_and_last_purchase": cdnow["t_x"] * 7,
        "days_since_first_purchase": cdnow["T"] * 7,
        "total_spend": first + cdnow["x"] * cdnow["zbar"],
        "first_purchase_spend": first,
    })  # fmt: skip
    prospects = pd.DataFrame({name: np.nan for name in COLUMNS}, index=range(300))
    prospects["repeat_purchase_days"] = prospects["total_spend"] = 0.0
    return pd.concat([buyers, prospects], ignore_index=True)


@pytest.fixture(scope="module")
def model(snapshot: pd.DataFrame) -> BtydModel:
    purchases = np.random.default_rng(4).poisson(0.3, len(snapshot))
    return BtydModel().fit(snapshot, purchases, label_horizon_days=90)


def test_summary_of_few_rows_equals_the_numpy_expressions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mix of missing, infinite, negative, zero and positive inputs (8^5 rows)."""
    values = [np.nan, -np.inf, -3.0, 0.0, 0.5, 2.0, 7.0, np.inf]
    rows = np.array(list(itertools.product(values, repeat=len(COLUMNS)))).T
    columns = dict(zip(COLUMNS, rows, strict=True))
    monkeypatch.setattr(history, "FEW_ROWS", rows.shape[1])
    compiled = summary(columns)
    monkeypatch.setattr(history, "FEW_ROWS", 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        expressions = summary(columns)
    for name in ("buyer", "x", "t_x", "T", "repeat_mean_spend"):
        got, expected = getattr(compiled, name), getattr(expressions, name)
        np.testing.assert_array_equal(got, expected, name)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected), name)  # -0.0
    assert compiled.buyer.sum() == 3 * 8**4  # T finite and positive: 0.5, 2 and 7


def test_summary_of_few_rows_refuses_columns_of_different_lengths() -> None:
    columns = {name: np.ones(3) for name in COLUMNS} | {"repeat_purchase_days": np.ones(2)}
    with pytest.raises(ValueError, match=r"feature columns of different lengths: \[2, 3\]"):
        summary(columns)


def test_prime_memoises_the_methods_values(
    model: BtydModel, snapshot: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    primed = model.prime(summary(snapshot), [90, 365.0, 90], 365)
    me = id(model)
    assert set(primed.memo) == {
        (me, "alive"), (me, "spend"), (me, "clv", 365), (me, "purchases", 90),
        (me, "purchases", 365),
    }  # fmt: skip
    fresh = summary(snapshot)  # a new memo: the methods compute with numpy
    computed = {
        "alive": model.probability_alive(fresh),
        "spend": model.expected_spend_per_purchase(fresh),
        "clv": model.clv(fresh, 365),
        90: model.expected_purchases(fresh, 90),
        365: model.expected_purchases(fresh, 365),
    }
    # From here the methods must answer from the primed memo, never compute.
    for fitter, method in [
        (model.bgnbd_, "probability_alive"),
        (model.bgnbd_, "expected_purchases"),
        (model.gamma_gamma_, "conditional_expected_spend"),
    ]:
        monkeypatch.setattr(fitter, method, lambda *a, **k: pytest.fail("computed, not primed"))
    assert model.expected_purchases(primed, 365.0) is primed.memo[(me, "purchases", 365)]
    np.testing.assert_allclose(model.probability_alive(primed), computed["alive"], rtol=RTOL)
    np.testing.assert_allclose(
        model.expected_spend_per_purchase(primed), computed["spend"], rtol=RTOL, atol=0
    )
    for horizon in (90, 365):
        np.testing.assert_allclose(
            model.expected_purchases(primed, horizon), computed[horizon], rtol=RTOL, atol=0
        )
    np.testing.assert_allclose(model.clv(primed, 365), computed["clv"], rtol=1e-14)
    assert fresh.buyer.sum() == len(snapshot) - 300
    assert np.isnan(model.probability_alive(primed)[~primed.buyer]).all()
    prospects = model.clv(primed, 365)[~primed.buyer]
    assert prospects == pytest.approx(computed["clv"][~fresh.buyer]) and prospects[0] > 0
    assert not model.clv(primed, 365).flags.writeable
