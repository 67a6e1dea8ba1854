"""The top reasons: each row's largest absolute contributions, largest first."""

from __future__ import annotations

import numpy as np

from serving.scoring import largest


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
