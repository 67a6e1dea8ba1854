"""In-process scoring: the columns of request rows; the top reasons (each row's largest
absolute contributions, largest first)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from clm.settings import ClmSettings
from features.online import open_store
from serving.scoring import Scorer, _ranges, largest, load_champions
from tests.serving.conftest import Deployment


@pytest.fixture
def scoring(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> tuple[Scorer, Any]:
    """A scorer of the deployment's champions and its online store."""
    for key in ("CLM_TRAINING__TRACKING_URI", "CLM_SERVING__ONLINE_STORE"):
        monkeypatch.setenv(key, deployment.env[key])
    settings = ClmSettings()
    store = open_store(settings.serving.online_store)
    scorer = Scorer(load_champions(settings), settings, store.meta()["new_customer"])
    return scorer, store


def test_rows_lacking_a_feature_give_nan_for_it_and_the_same_numbers_otherwise(
    scoring: tuple[Scorer, Any],
) -> None:
    scorer, store = scoring
    stored = list(store.get_many([f"C{i:06d}" for i in range(1, 40)]).values())[:5]
    assert len(stored) == 5
    whole = scorer.columns_of(stored)  # the store's float64 blocks, stacked
    plain = scorer.columns_of([dict(row) for row in stored])  # the same rows read by name
    assert set(plain) == set(whole)
    for column, values in plain.items():
        np.testing.assert_array_equal(whole[column], values)
    name = next(n for n in scorer.numeric if not np.isnan(whole[n][2]))  # a number there
    lacking = [dict(row) for row in stored]
    del lacking[2][name]  # a store written for other models: looked up by name
    got = scorer.columns_of(lacking)
    assert np.isnan(got[name][2])
    np.testing.assert_array_equal(np.delete(got[name], 2), np.delete(whole[name], 2))
    for other in scorer.numeric:
        if other != name:
            np.testing.assert_array_equal(got[other], whole[other])


def test_a_store_without_an_event_type_the_champions_use_gives_its_counts_as_0(
    scoring: tuple[Scorer, Any],
) -> None:
    trained, store = scoring
    absent = [c for c in trained.columns if c.startswith("referral_")]
    assert absent  # the champions count referrals per window
    meta = store.meta()
    present = [c for c in meta["columns"] if c not in absent]
    new_customer = {k: v for k, v in meta["new_customer"].items() if k not in absent}
    scorer = Scorer(trained.champions, ClmSettings(), new_customer, present=present)
    assert scorer.new_customer.items() >= dict.fromkeys(absent, 0).items()
    stored = list(store.get_many([f"C{i:06d}" for i in range(1, 40)]).values())[:5]
    rows = [{k: v for k, v in dict(row).items() if k not in absent} for row in stored]
    got = scorer.columns_of(rows)
    want = scorer.columns_of([{**row, **dict.fromkeys(absent, 0)} for row in rows])
    for column, values in want.items():
        np.testing.assert_array_equal(got[column], values)
    assert all((got[c] == 0).all() for c in absent)
    # Without the store's columns (a store for these models) a lacking count stays NaN.
    assert np.isnan(trained.columns_of(rows)[absent[0]]).all()


def test_stored_vectors_give_the_same_results_as_the_rows_they_read_like(
    scoring: tuple[Scorer, Any],
) -> None:
    scorer, store = scoring
    stored = store.get_many([f"C{i:06d}" for i in range(1, 200)])
    ids = list(stored)[:40]
    vectors = [stored[i] for i in ids]
    known = [True] * len(ids)
    # Vectors are read from their stacked blocks; the same rows as dicts, by name.
    fast = scorer.score(ids, vectors, known)
    plain = scorer.score(ids, [dict(v) for v in vectors], known)
    assert fast == plain
    values = [r["value"] for result in fast for r in result["reasons"]]
    shown = {type(v) for v in values}
    assert shown <= {int, float, bool, str, type(None)} and len(values) == 3 * len(ids)
    for result, vector in zip(fast, vectors, strict=True):
        for reason in result["reasons"]:
            expected = vector.get(reason["feature"])
            assert reason["value"] == expected and type(reason["value"]) is type(expected)


def test_largest_equals_a_stable_sort_by_absolute_value_with_ties_to_the_lower_index() -> None:
    rng = np.random.default_rng(3)
    # Few distinct values, both signs: many ties between features and between signs.
    values = rng.integers(-4, 5, size=(2_000, 12)).astype(float)
    values[:5] = 0.0  # a row of zeros: the first k features
    for k in (1, 3, 12):
        expected = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(largest(values, k), expected)


def test_largest_picks_the_negative_contribution_when_it_is_the_biggest() -> None:
    values = np.array([[0.1, -2.0, 0.5, 1.5, -0.2]])
    assert largest(values, 3).tolist() == [[1, 3, 2]]


def test_bounded_and_signed_features_are_named_exactly() -> None:
    names = [
        "last_nps", "mean_nps", "nps_responses", "survey_nps_events_30d",
        "email_open_rate_365d", "app_rate_prompt_events_30d",
        "events_trend_30d_vs_prior_60d", "session_trend_30d_vs_prior_60d",
        "price_trend_view_events_30d", "attr_nps_band", "net_spend", "total_spend",
    ]  # fmt: skip
    bounds, signed = _ranges(names, ClmSettings())
    assert bounds == {
        "last_nps": (0.0, 10.0),
        "mean_nps": (0.0, 10.0),
        "email_open_rate_365d": (0.0, 1.0),
        "events_trend_30d_vs_prior_60d": (-1.0, 1.0),
        "session_trend_30d_vs_prior_60d": (-1.0, 1.0),
    }
    assert signed == {
        "events_trend_30d_vs_prior_60d", "session_trend_30d_vs_prior_60d", "attr_nps_band",
        "net_spend",
    }  # fmt: skip
