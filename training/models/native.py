"""Predictions and contributions through XGBoost's C API, without the wrapper's per-call work.

``Booster.inplace_predict`` and ``Booster.predict(DMatrix, pred_contribs=True)`` spend about
0.2-0.5 ms per call in Python before and after the C call (type dispatch, JSON arguments,
feature checks, a DMatrix object with its names and types): most of a one-customer request,
which makes four such calls. Here the same C functions (``XGBoosterPredictFromDense``,
``XGDMatrixCreateFromDense`` + ``XGBoosterPredictFromDMatrix``, from XGBoost's stable C API)
are called with arguments built once, on float32 C-contiguous matrices. The numbers are
XGBoost's own; a test compares them with the public methods. If the C library cannot be
reached this way (another XGBoost build), the public methods are used.
"""

from __future__ import annotations

import ctypes
import json
import threading
from typing import Any

import numpy as np
import xgboost as xgb

from training.models.forest import PARALLEL, forest, tables

__all__ = ["contributions", "predict"]

try:
    from xgboost.core import _LIB, _check_call, _ProxyDMatrix, c_bst_ulong, make_jcargs

    _PREDICT = make_jcargs(
        type=0, training=False, iteration_begin=0, iteration_end=0, missing=np.nan,
        strict_shape=False, cache_id=0,
    )  # fmt: skip
    _CONTRIBS = {
        approx: json.dumps(
            {
                "type": 3 if approx else 2,
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "strict_shape": False,
            }
        ).encode()
        for approx in (False, True)
    }
    _DENSE = {
        threads: make_jcargs(missing=np.nan, nthread=threads, data_split_mode=0)
        for threads in (0, 1)
    }
    _NATIVE = all(
        hasattr(_LIB, name)
        for name in (
            "XGBoosterPredictFromDense",
            "XGDMatrixCreateFromDense",
            "XGBoosterPredictFromDMatrix",
            "XGDMatrixFree",
        )
    )
except ImportError:  # pragma: no cover - another XGBoost layout
    _NATIVE = False

# Matrices with fewer rows are converted on one thread (a service request), larger on all.
SMALL = PARALLEL
# Fewer rows than this are walked by training.models.forest (one row at a time, no fixed cost);
# from it on, forest.tables' lookups are faster (equal at about 10 rows for each of the
# four sample models, 2.3-3.2x faster at 100).
FOREST_ROWS = 16
_local = threading.local()


def _proxy() -> Any:
    """This thread's proxy DMatrix for in-place prediction. Given one, XGBoost fills it with
    each call's array instead of making a new one, whose set-up (reading the cgroup CPU
    quota files among other things) is about a third of a one-row call."""
    proxy = getattr(_local, "proxy", None)
    if proxy is None:
        proxy = _local.proxy = _ProxyDMatrix()
    return proxy.handle


def _interface(matrix: np.ndarray) -> bytes:
    rows, columns = matrix.shape
    address = matrix.ctypes.data
    return (
        f'{{"data":[{address},true],"shape":[{rows},{columns}],"strides":null,'
        f'"typestr":"<f4","version":3}}'
    ).encode()


def _float32(matrix: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _output(shape: Any, dims: Any, values: Any) -> np.ndarray:
    extent = tuple(shape[i] for i in range(dims.value))
    out = np.empty(extent, dtype=np.float32)
    # The buffer belongs to the booster and is reused by its next call: copy it out.
    ctypes.memmove(out.ctypes.data, values, out.nbytes)
    return out


def predict(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """As ``booster.inplace_predict(matrix, validate_features=False)``.

    :mod:`training.models.forest` predicts where it gives XGBoost's numbers bit for bit
    (checked when it is built): fewer than ``FOREST_ROWS`` rows (a service request) by
    walking the trees, as XGBoost's fixed cost per call is most of a few rows' prediction;
    more by its lookup tables, faster than XGBoost's blocked predictor.
    """
    if not _NATIVE or len(matrix) == 0:
        return booster.inplace_predict(matrix, validate_features=False)
    matrix = _float32(matrix)
    compiled = forest(booster) if len(matrix) < FOREST_ROWS else tables(booster)
    if compiled is not None:
        return compiled.predict(matrix)
    shape = ctypes.POINTER(c_bst_ulong)()
    dims = c_bst_ulong()
    values = ctypes.POINTER(ctypes.c_float)()
    _check_call(
        _LIB.XGBoosterPredictFromDense(
            booster.handle, _interface(matrix), _PREDICT, _proxy(),
            ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(values),
        )
    )  # fmt: skip
    return _output(shape, dims, values)


def contributions(booster: xgb.Booster, matrix: np.ndarray, approx: bool = False) -> np.ndarray:
    """As ``booster.predict(xgb.DMatrix(matrix), pred_contribs=True, approx_contribs=approx)``:
    one column per feature, the bias last."""
    if not _NATIVE or len(matrix) == 0:
        return booster.predict(xgb.DMatrix(matrix), pred_contribs=True, approx_contribs=approx)
    matrix = _float32(matrix)
    handle = ctypes.c_void_p()
    threads = 1 if len(matrix) < SMALL else 0
    created = _LIB.XGDMatrixCreateFromDense(
        _interface(matrix), _DENSE[threads], ctypes.byref(handle)
    )
    _check_call(created)
    try:
        shape = ctypes.POINTER(c_bst_ulong)()
        dims = c_bst_ulong()
        values = ctypes.POINTER(ctypes.c_float)()
        _check_call(
            _LIB.XGBoosterPredictFromDMatrix(
                booster.handle, handle, _CONTRIBS[approx], ctypes.byref(shape),
                ctypes.byref(dims), ctypes.byref(values),
            )
        )  # fmt: skip
        return _output(shape, dims, values)
    finally:
        _check_call(_LIB.XGDMatrixFree(handle))
