"""The feature matrix shared by the three models: snapshot columns to a float32 array.

Numeric columns pass through (missing stays NaN, which XGBoost routes on its own);
text columns (the stage, static attributes) are one-hot encoded over the levels seen in
``fit``, with unseen levels all zeros. The column order is fixed at ``fit`` and checked at
``transform``, so a model never scores a frame with different columns silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

import numba
import numpy as np
import pandas as pd

__all__ = ["NON_FEATURES", "TabularEncoder", "feature_frame", "xgb_params"]

# Snapshot columns that are keys or targets, never inputs.
NON_FEATURES = ("customer_id", "as_of")
MAX_LEVELS = 30
# Up to this many rows, text columns are one-hot encoded row by row (cheaper for a few rows).
FEW_ROWS = 64
# From this many rows, the numbers are copied into the matrix on every core (batch chunks).
MANY_ROWS = 4096


def feature_frame(snapshot: Any) -> Any:
    """The input columns of a snapshot: everything but keys and ``label_*`` columns.

    A mapping of column name to 1-D array (how the service passes rows, without pandas)
    passes through: the encoder reads only its own columns from it.
    """
    if not isinstance(snapshot, pd.DataFrame):
        return snapshot
    keep = [c for c in snapshot.columns if c not in NON_FEATURES and not c.startswith("label_")]
    return snapshot[keep]


def xgb_params(settings: Any, **overrides: Any) -> dict[str, Any]:
    """XGBoost parameters from the training settings, with overrides (e.g. from tuning)."""
    params = {
        "n_estimators": settings.n_estimators,
        "learning_rate": settings.learning_rate,
        "max_depth": settings.max_depth,
        "min_child_weight": settings.min_child_weight,
        "subsample": settings.subsample,
        "colsample_bytree": settings.colsample_bytree,
        "reg_lambda": settings.reg_lambda,
        "max_bin": 64,  # coarser histograms than the default 256: faster on 2 cores
        "random_state": settings.seed,
        "n_jobs": settings.n_jobs or None,
    }
    params.update(overrides)
    return params


class TabularEncoder:
    """Snapshot features to a float32 matrix with a fixed, named column order."""

    def fit(self, frame: pd.DataFrame) -> Self:
        self.input_columns_ = list(frame.columns)
        self.levels_: dict[str, list[str]] = {}
        for column in frame.columns:
            if not _is_numeric(frame[column]):
                counts = frame[column].dropna().astype(str).value_counts()
                self.levels_[column] = sorted(counts.index[:MAX_LEVELS])
        self.feature_names_ = list(self._names())
        return self

    def _names(self) -> Iterable[str]:
        for column in self.input_columns_:
            if column in self.levels_:
                yield from (f"{column}={level}" for level in self.levels_[column])
            else:
                yield column

    def transform(self, frame: Any) -> np.ndarray:
        """A DataFrame, or a mapping of column name to 1-D array, to the float32 matrix."""
        columns = frame.columns if isinstance(frame, pd.DataFrame) else frame.keys()
        missing = [c for c in self.input_columns_ if c not in columns]
        if missing:
            raise ValueError(
                f"missing feature columns {missing[:10]} ({len(missing)} in all); the model was "
                "trained on snapshots from features.snapshots"
            )
        if not isinstance(frame, pd.DataFrame):
            return self._transform_arrays(frame)
        parts: list[np.ndarray] = []
        for column in self.input_columns_:
            values = frame[column]
            if column in self.levels_:
                text = np.asarray(values.astype("string").fillna("\x00"), dtype=object)
                parts.extend((text == level).astype(np.float32) for level in self.levels_[column])
            else:
                parts.append(_as_float(values, column))
        return np.column_stack(parts) if parts else np.empty((len(frame), 0), np.float32)

    def _layout(
        self,
    ) -> tuple[list[str], np.ndarray, list[tuple[str, list[str], range, dict[str, int]]]]:
        """Numeric input columns with their output positions, and each text column with
        its levels, their positions and the position of each level (worked out once per
        encoder)."""
        layout = self.__dict__.get("_layout_cache")
        if layout is None:
            numeric, positions, text, j = [], [], [], 0
            for column in self.input_columns_:
                if column in self.levels_:
                    levels = self.levels_[column]
                    places = range(j, j + len(levels))
                    text.append((column, levels, places, dict(zip(levels, places, strict=True))))
                    j += len(levels)
                else:
                    numeric.append(column)
                    positions.append(j)
                    j += 1
            layout = (numeric, np.asarray(positions, dtype=np.intp), text)
            self.__dict__["_layout_cache"] = layout
        return layout

    def transform_sharing(
        self, columns: Any, other: TabularEncoder, matrix: np.ndarray
    ) -> np.ndarray:
        """:meth:`transform` of a mapping of arrays, copying the outputs that ``other`` (an
        encoder with the same levels for the text columns both read) already put in
        ``matrix``, its encoding of the same rows; only the remaining numeric columns are
        converted. Falls back to :meth:`transform` when the encodings do not line up."""
        plan = self._sharing(other)
        rows = len(matrix)
        if plan is None or isinstance(columns, pd.DataFrame) or matrix.dtype != np.float32:
            return self.transform(columns)
        mine, theirs, rest, places = plan
        if any(len(columns[c]) != rows for c in rest):
            raise ValueError(f"columns of {rows} rows expected, as in the shared matrix")
        out = np.empty((rows, len(self.feature_names_)), dtype=np.float32)
        if rows >= MANY_ROWS:
            _gather(np.ascontiguousarray(matrix), theirs, mine, out)
        else:
            out[:, mine] = matrix[:, theirs]
        for column, j in zip(rest, places, strict=True):
            out[:, j] = _numbers(columns[column], column)
        return out

    def _sharing(
        self, other: TabularEncoder
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[int]] | None:
        cache = self.__dict__.setdefault("_sharing_cache", {})
        key = id(other)
        if key in cache and cache[key][0] is other:
            return cache[key][1]
        plan = None
        same_levels = all(
            other.levels_.get(c) == levels
            for c, levels in self.levels_.items()
            if c in other.input_columns_
        )
        theirs = {name: j for j, name in enumerate(other.feature_names_)}
        text_in_other = all(c in other.levels_ for c in self.levels_)
        numeric_in_other = {c for c in other.input_columns_ if c not in other.levels_}
        if same_levels and text_in_other:
            mine, source, rest, places = [], [], [], []
            for j, name in enumerate(self.feature_names_):
                column = name.split("=", 1)[0] if "=" in name else name
                if name in theirs and (column in self.levels_ or name in numeric_in_other):
                    mine.append(j)
                    source.append(theirs[name])
                else:
                    rest.append(name)
                    places.append(j)
            if all(c not in self.levels_ for c in rest):
                plan = (np.asarray(mine, np.intp), np.asarray(source, np.intp), rest, places)
        cache[key] = (other, plan)
        return plan

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_cache")}

    def _transform_arrays(self, columns: Any) -> np.ndarray:
        rows = len(next(iter(columns.values()))) if columns else 0
        out = np.empty((rows, len(self.feature_names_)), dtype=np.float32)
        numeric, positions, text = self._layout()
        try:
            # One conversion for every numeric column: (columns, rows) -> the output's columns.
            block = np.array([columns[c] for c in numeric], dtype=np.float64).reshape(-1, rows)
        except (TypeError, ValueError):
            for column in numeric:  # name the column that is not numbers
                _numbers(columns[column], column)
            raise
        if rows >= MANY_ROWS:
            _fill(block, positions, out)
        else:
            out[:, positions] = block.T
        for column, levels, places, where in text:
            values = columns[column]
            if rows <= FEW_ROWS:  # a service request: a dict lookup per row, not per level
                out[:, places.start : places.stop] = 0.0
                for i, value in enumerate(values):
                    j = where.get(value) if isinstance(value, str) else None
                    if j is not None:
                        out[i, j] = 1.0
                continue
            values = np.asarray(values, dtype=object)
            for level, j in zip(levels, places, strict=True):
                out[:, j] = values == level
        return out


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def _numbers(values: Any, column: str) -> np.ndarray:
    """``values`` as float64, or an error naming the column."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"feature {column}: expected numbers ({error})") from None


def _as_float(values: pd.Series, column: str) -> np.ndarray:
    try:
        return pd.to_numeric(values).to_numpy(dtype=np.float32, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise ValueError(f"feature {column}: expected numbers ({error})") from None


@numba.njit(cache=True, nogil=True, parallel=True)
def _fill(block: np.ndarray, positions: np.ndarray, out: np.ndarray) -> None:
    """``out[:, positions] = block.T`` in float32, by blocks of rows on every core."""
    columns, rows = block.shape
    step = 256
    for b in numba.prange((rows + step - 1) // step):
        for j in range(columns):
            p = positions[j]
            for r in range(b * step, min(rows, (b + 1) * step)):
                out[r, p] = block[j, r]


@numba.njit(cache=True, nogil=True, parallel=True)
def _gather(matrix: np.ndarray, source: np.ndarray, target: np.ndarray, out: np.ndarray) -> None:
    """``out[:, target] = matrix[:, source]``, by blocks of rows on every core."""
    rows = matrix.shape[0]
    step = 256
    for b in numba.prange((rows + step - 1) // step):
        for r in range(b * step, min(rows, (b + 1) * step)):
            for j in range(source.shape[0]):
                out[r, target[j]] = matrix[r, source[j]]
