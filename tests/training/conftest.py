from __future__ import annotations

from pathlib import Path

import pytest

CDNOW_WHEEL_DIR = Path(__file__).parents[2] / ".cache/lifetimes"


@pytest.fixture(scope="session")
def lifetimes_wheel() -> Path:
    """The lifetimes 0.11.3 wheel that ships the CDNOW sample (fetched by ``make install``)."""
    # pip keeps the project's own spelling: the file is Lifetimes-0.11.3-py3-none-any.whl.
    found = sorted(CDNOW_WHEEL_DIR.glob("[Ll]ifetimes-0.11.3-*.whl"))
    if not found:
        pytest.fail(
            f"no lifetimes-0.11.3 wheel in {CDNOW_WHEEL_DIR} (it holds the CDNOW sample): "
            "run `make install`"
        )
    return found[0]


@pytest.fixture(scope="session")
def training_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic population large enough for stable model comparisons (8,000 people)."""
    from datetime import date

    from features import synthetic

    folder = tmp_path_factory.mktemp("training-sample")
    data = synthetic.generate(8000, seed=5, start=date(2023, 1, 1), end=date(2026, 1, 1))
    synthetic.write(data, folder)
    return folder


@pytest.fixture(scope="session")
def categorical_booster():  # type: ignore[no-untyped-def]
    """An XGBoost booster with categorical (partition) splits, which the compiled trees and
    TreeSHAP tables leave to XGBoost."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"c": pd.Categorical(rng.choice(list("abcd"), 400)),
                          "x": rng.normal(size=400)})  # fmt: skip
    y = (frame["c"].isin(["a", "b"]) ^ (frame["x"] > 0)).astype(float)
    data = xgb.DMatrix(frame, y, enable_categorical=True)
    params = {"objective": "binary:logistic", "max_cat_to_onehot": 1, "nthread": 1}
    return xgb.train(params, data, num_boost_round=5)
