"""The MLflow pyfunc face of the three estimators.

``mlflow.pyfunc.load_model("models:/clm-churn@champion").predict(features)`` returns a
DataFrame of what a user wants (probabilities, not class labels): ``churn_probability``;
``next_stage`` and ``probability_<stage>``; ``expected_purchases``, ``expected_spend``,
``clv``. The optional ``horizon_days`` parameter asks for another horizon than the trained one.
"""

from __future__ import annotations

import numbers
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc import PythonModel

__all__ = ["EstimatorPyfunc", "input_example", "model_signature", "pip_requirements"]


class EstimatorPyfunc(PythonModel):
    """Wraps a fitted clm estimator (anything with ``predict_frame(X, horizon_days)``)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        # A DataFrame hint is one MLflow 3 derives no schema from (the logged signature is the
        # schema) and, unlike no hint, does not warn about on every import of this module.
        horizon = (params or {}).get("horizon_days")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.estimator.predict_frame(frame, horizon_days=_horizon(horizon))


def _horizon(value: Any) -> int | None:
    """``params["horizon_days"]``: None (the trained horizon) or a whole number of days >= 1
    (0 or a negative horizon has no answer: it would give the trained one, or 1.0)."""
    if value is None:
        return None
    real = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
    number = float(value) if real else -1.0
    if not (number >= 1 and number.is_integer()):
        raise ValueError(f"params horizon_days: {value!r} (expected a whole number of days >= 1)")
    return int(number)


def input_example(features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few snapshot rows with the snapshot's own types.

    Count columns are whole numbers and never missing (zero-filled), so the schema keeps
    them as integers; everything that can be missing is a float or a string already.
    """
    example = features.head(rows).copy()
    for column in example.columns:
        if not pd.api.types.is_numeric_dtype(example[column]):
            example[column] = example[column].astype(object)
    return example


def pip_requirements() -> list[str]:
    """The packages a loader needs, pinned to this environment (MLflow would otherwise load
    the model in a subprocess to guess them, which costs seconds per model)."""
    wanted = ("clm", "mlflow", "numpy", "pandas", "scikit-learn", "scipy", "xgboost-cpu")
    pins = []
    for name in wanted:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def model_signature(
    example: pd.DataFrame, output: pd.DataFrame, horizon_days: int
) -> ModelSignature:
    return infer_signature(example, output, params={"horizon_days": int(horizon_days)})
