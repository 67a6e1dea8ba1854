"""``clm score --engine spark`` in local mode: the same scores as the local engine."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clm.errors import DataError
from clm.settings import ClmSettings
from features.stages import STAGES
from reporting.metrics import read_scores
from serving.batch import BatchRequest, score_batch
from serving.scoring import champion_versions
from tests.serving.conftest import Deployment

pytestmark = pytest.mark.slow


def test_spark_scores_equal_the_local_engine_for_every_customer(
    deployment: Deployment, everyone: pd.DataFrame, tmp_path: Path
) -> None:
    listing = tmp_path / "list.parquet"
    ids = [*everyone["customer_id"], "not-a-customer"]
    pd.DataFrame({"customer_id": ids, "segment": np.arange(len(ids)) % 3}).to_parquet(listing)
    settings = ClmSettings(
        training={"tracking_uri": deployment.env["CLM_TRAINING__TRACKING_URI"]},  # type: ignore[arg-type]
        spark={"master": "local[2]", "shuffle_partitions": 4},  # type: ignore[arg-type]
    )
    out = tmp_path / "spark.parquet"
    request = BatchRequest(
        data=deployment.data, as_of=date(2025, 7, 1), out=out, customers=listing, engine="spark"
    )
    summary = score_batch(request, settings)
    assert summary.rows == len(ids) and summary.unknown == 1
    assert out.is_dir() and sorted(p.name for p in out.glob("stage=*"))  # partitioned by stage
    spark = pd.read_parquet(out).set_index("customer_id")
    # The folder records the cutoff and the versions as the local engine's file does, and
    # clm report --scores reads it.
    metadata = pq.read_schema(out / "_common_metadata").metadata
    assert json.loads(metadata[b"clm.model_versions"]) == dict(champion_versions(settings)[1])
    trained = {"clm-churn": 90, "clm-stage": 90, "clm-clv": 365}
    assert json.loads(metadata[b"clm.horizon_days"]) == trained
    assert read_scores(out, date(2025, 7, 1)).attrs["as_of"] == "2025-07-01"
    with pytest.raises(DataError, match="scored as of 2025-07-01, not --as-of 2025-08-01"):
        read_scores(out, date(2025, 8, 1))
    assert spark.loc["not-a-customer", "known"] == np.False_
    assert (spark["segment"].reindex(ids).to_numpy() == np.arange(len(ids)) % 3).all()
    local = everyone.set_index("customer_id")
    spark = spark.loc[local.index]
    assert spark["stage"].astype(str).tolist() == local["stage"].tolist()
    numbers = ["churn_probability", "expected_purchases", "expected_spend", "clv", "action_value",
               *(f"probability_{s}" for s in STAGES)]  # fmt: skip
    for column in numbers:
        np.testing.assert_allclose(spark[column], local[column], atol=1e-6, err_msg=column)
    for column in ("rfm_segment", "churn_risk", "next_stage", "action", "reason_1", "reason_2",
                   "reason_3"):  # fmt: skip
        # (No segment is null in both: None read back from one file, NaN from the other.)
        same = spark[column].fillna("-").astype(str) == local[column].fillna("-").astype(str)
        assert same.all(), column
    assert spark["rfm_segment"].notna().sum() > len(spark) // 4  # the buyers have one
