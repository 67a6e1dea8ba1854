"""Scoring with the registered champions, shared by the service and batch scoring.

The champions are resolved from the registry once (``models:/clm-churn@champion`` and the
others, pinned to the version the alias held at load time) and loaded through MLflow's
pyfunc loader; scoring then calls the fitted estimators directly on columns of numpy arrays,
never pyfunc's DataFrame path (measured here: about 3 ms per 1-row pyfunc call against
about 0.2 ms for the native booster). Every XGBoost booster runs on one thread: a service
worker per core scales better than threads fighting over a busy core.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import operator
import os
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numba
import numpy as np

from clm.errors import ClmError, DataError
from clm.settings import AS_OF_KEY, MEANING_KEY, ClmSettings, feature_meaning, meaning_changes
from clm.tracking import (
    MODEL_NAMES,
    check_sqlite_store,
    logged_metadata,
    sqlite_path,
    tracking_uri,
)
from features.contract import MAX_NUMBER
from features.engagement import per_type_suffixes
from features.online import Layout, Vector
from features.snapshots import absent_event_type_columns
from features.stages import PROSPECT_STAGES, STAGES
from serving.decision import Policy

# A request this large predicts by the models' lookup tables, not tree walks (from
# training.models.native.FOREST_ROWS = 16 rows on): the start-up passes build them.
WARM_ROWS = 64
PROSPECT = "prospect"  # the churn_risk of someone who has not bought yet

__all__ = [
    "PROSPECT",
    "BadInput",
    "Champions",
    "Scorer",
    "Scores",
    "champion_features",
    "champion_versions",
    "check_feature_meaning",
    "largest",
    "load_champions",
    "shown",
]


class BadInput(ValueError):
    """A request the caller must fix; the message names the customer and the field."""


@dataclass(frozen=True)
class Scores:
    """Per-customer arrays: the three models' outputs, the decision and the top reasons
    (indices into the churn model's encoded feature names, and their contributions)."""

    stage: np.ndarray
    churn_probability: np.ndarray
    churn_risk: np.ndarray
    stage_probabilities: np.ndarray
    next_stage: np.ndarray
    expected_purchases: np.ndarray
    expected_spend: np.ndarray
    clv: np.ndarray
    action: np.ndarray
    action_value: np.ndarray
    top_features: np.ndarray
    top_contributions: np.ndarray


@dataclass(frozen=True)
class Champions:
    churn: Any
    stage: Any
    clv: Any
    versions: dict[str, str]
    uri: str


def _set_threads(estimator: Any, threads: int) -> None:
    """XGBoost threads of every booster of an estimator (0: one per core)."""
    import xgboost as xgb

    for value in vars(estimator).values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, xgb.Booster):
                item.set_param({"nthread": threads or (os.cpu_count() or 1)})


def champion_features(versions: Mapping[str, str]) -> list[str]:
    """The features the champions were logged with, from their MLflow signatures (no
    unpickling: Spark's driver and clm features materialize never load the models)."""
    import mlflow

    names: list[str] = []
    for name, version in versions.items():
        signature = mlflow.models.get_model_info(f"models:/{name}/{version}").signature
        names += [str(n) for n in signature.inputs.input_names()] if signature else []
    return names


def check_feature_meaning(
    versions: Mapping[str, str],
    settings: ClmSettings,
    store: Mapping[str, Any] | None = None,
    as_of: date | None = None,
) -> dict[str, Any] | None:
    """Refuse settings under which the champions' features would mean something else than
    what they were trained on (``stages.churn_inactivity_days`` 90 against 180: other
    customers would be 'churned'), naming each with both values (from the models' logged
    metadata; a model logged before it was kept is not checked). With ``store`` (an online
    store's meta), the settings its features were materialized with are checked instead.
    With ``as_of`` (a batch's or a store's cutoff), champions trained on labels past it are
    warned about: their scores there are in-sample. Returns the settings the champions were
    trained with (None for models logged before they were kept)."""
    metadata = {name: logged_metadata(name, version) for name, version in versions.items()}
    if as_of is not None:
        later = [
            f"{name} v{versions[name]} as of {m[AS_OF_KEY]}"
            for name, m in metadata.items()
            if m.get(AS_OF_KEY) and date.fromisoformat(m[AS_OF_KEY]) > as_of
        ]
        if later:
            warnings.warn(
                f"--as-of {as_of} is before the cutoff the champions were trained at "
                f"({', '.join(later)}): they were fitted on outcomes after it, so these scores "
                f"are in-sample (a backtest needs models trained as of {as_of} or earlier)",
                UserWarning,
                stacklevel=2,
            )

    if store is not None:
        now, label = store.get("feature_settings"), "the store:"
        fix = (
            "the online store's features were materialized with other settings; run clm "
            "features materialize with the champions' settings"
        )
    else:
        now, label = feature_meaning(settings), "now"
        fix = (
            "with these settings their features would mean something else; set them back "
            "(clm.toml, CLM_* variables), or train models with them (clm train; the gate "
            "does not compare models of other settings: promote each with clm models promote)"
        )
    trained = next((m[MEANING_KEY] for m in metadata.values() if m.get(MEANING_KEY)), None)
    if now is None:  # a store materialized before it kept them
        return trained
    changes: dict[str, list[str]] = {}  # what differs -> the champions it differs for
    for name, kept in metadata.items():
        for change in meaning_changes(kept.get(MEANING_KEY) or {}, now, label):
            changes.setdefault(change, []).append(f"{name} v{versions[name]}")
    if changes:
        said = [f"{change} [{', '.join(who)}]" for change, who in changes.items()]
        more = f" and {len(said) - 5} more" if len(said) > 5 else ""
        raise DataError(f"the champions were trained with {'; '.join(said[:5])}{more}: {fix}")
    return trained


def champion_versions(settings: ClmSettings) -> tuple[str, dict[str, str]]:
    """The tracking URI and the version each ``@champion`` alias points at; a clear error
    names the store or the models that are missing."""
    uri, _ = tracking_uri(settings.training)
    database = sqlite_path(uri)
    if database is not None:
        check_sqlite_store(database, create=False)
    # MLflow is imported here, not at module level: it takes seconds, which batch scoring
    # spends while DuckDB builds the features.
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions, missing = {}, []
    for name in MODEL_NAMES.values():
        try:
            versions[name] = str(client.get_model_version_by_alias(name, "champion").version)
        except MlflowException:
            missing.append(name)
    if missing:
        raise ClmError(
            f"no @champion for {', '.join(missing)} in {uri}: run clm train (or clm models "
            "promote) first"
        )
    return uri, versions


def load_champions(
    settings: ClmSettings, threads: int = 1, versions: Mapping[str, str] | None = None
) -> Champions:
    """The three ``@champion`` estimators; a clear error names what is missing.

    ``threads``: XGBoost threads per booster, 1 for the service (a worker per core), 0 for
    batch scoring (every core). ``versions`` (registered name -> version) loads those
    versions instead: what a job's driver resolved, so its workers cannot load others.
    """
    if versions is None:
        uri, versions = champion_versions(settings)
    else:
        import mlflow

        uri = mlflow.get_tracking_uri()
    import mlflow.pyfunc

    loaded = {}
    for kind, name in MODEL_NAMES.items():
        model = mlflow.pyfunc.load_model(f"models:/{name}/{versions[name]}")
        estimator = model.unwrap_python_model().estimator
        _set_threads(estimator, threads)
        loaded[kind] = estimator
    return Champions(loaded["churn"], loaded["stage"], loaded["clv"], dict(versions), uri)


def _ranges(
    columns: Sequence[str], settings: ClmSettings
) -> tuple[dict[str, tuple[float, float]], frozenset[str]]:
    """The features with a bounded range (NPS 0-10, email rates 0-1, trends -1..1), by exact
    name, and those that may be negative (trends, net spend, attributes); every other
    feature is a count, a number of days or an amount of spend, never negative."""
    f = settings.features
    trend = per_type_suffixes(f)[-1]
    rates = {
        f"email_open_rate_{f.email_rate_window_days}d",
        f"email_click_rate_{f.email_rate_window_days}d",
    }
    bounds: dict[str, tuple[float, float]] = {}
    for name in columns:
        if name in ("last_nps", "mean_nps"):
            bounds[name] = (0.0, 10.0)
        elif name in rates:
            bounds[name] = (0.0, 1.0)
        elif name.endswith("_" + trend):
            bounds[name] = (-1.0, 1.0)
    signed = frozenset(
        n for n in columns if n.startswith("attr_") or n.endswith("_" + trend) or "net_spend" in n
    )
    return bounds, signed


class Scorer:
    """Rows of features in, scores and decisions out; see :meth:`score`."""

    def __init__(
        self,
        champions: Champions,
        settings: ClmSettings,
        new_customer: Mapping[str, Any],
        present: Collection[str] | None = None,
        kinds: tuple[Collection[str], Collection[str]] = ((), ()),
    ) -> None:
        """``present``: the store's columns; ``kinds``: its whole-number and flag columns
        (overrides of a whole number must be whole; only a flag takes true / false)."""
        self.champions = champions
        self.settings = settings.serving
        self.policy = Policy(settings.decision, STAGES)
        self.new_customer = dict(new_customer)
        encoders = [champions.churn.encoder_, champions.stage.encoder_]
        if champions.clv.encoder_ is not None:
            encoders.append(champions.clv.encoder_)
        self.text = set().union(*(e.levels_ for e in encoders)) | {"stage"}
        # The CLV model's own encoder also reads the BTYD columns it derives: its inputs are
        # feature_names_in_.
        clv_columns = set(champions.clv.feature_names_in_)
        self.columns = sorted(
            set().union(*(e.input_columns_ for e in encoders[:2])) | clv_columns | {"stage"}
        )
        self.known = frozenset(self.columns)
        self.bounds, self.signed = _ranges(self.columns, settings)
        # Features the rows will lack that are known to be 0 for everyone: the counts of an
        # event type the champions were trained with and the store's data never had
        # (``present``: the store's columns). Other lacking features are NaN.
        absent = absent_event_type_columns(
            self.columns, set(present if present is not None else new_customer), settings
        )
        self.defaults: dict[str, Any] = dict.fromkeys(absent, 0)
        self.new_customer.update(self.defaults)
        self.numeric = [c for c in self.columns if c not in self.text]
        # Counts and zero-filled amounts are never missing (0 when there is none).
        self.never_missing = frozenset(
            c for c in self.numeric if self.new_customer.get(c) is not None
        )
        self.whole_numbers, self.flags = frozenset(kinds[0]), frozenset(kinds[1])
        self.text_columns = [c for c in self.columns if c in self.text]
        names = champions.churn.encoder_.feature_names_
        # Churn and stage are fitted on the same snapshot columns: one encoding serves both.
        self.shared = names == champions.stage.encoder_.feature_names_
        self.reason_feature = [n.split("=", 1)[0] if "=" in n else n for n in names]
        # Per store layout (one at a time): where this scorer's numbers sit in its blocks,
        # and the kind of value of each reason's feature.
        self._layouts: dict[int, tuple[Layout, np.ndarray, list[int]]] = {}
        # Passes at load: what the first requests would build (the TreeSHAP tables, the
        # compiled code, the prediction tables of requests with many customers) is built
        # here, and a champion that cannot score fails the start.
        for rows in (1, WARM_ROWS):
            self.compute(self.columns_of([self.new_customer] * rows))

    def freeze(self) -> None:
        """Move everything loaded so far out of the garbage collector's way (see module doc
        of serving.service): later full collections then walk only per-request objects."""
        gc.collect()
        gc.freeze()

    def check(self, index: int, overrides: Mapping[str, Any]) -> None:
        """Reject unknown feature names and values of the wrong kind, naming them."""
        unknown = sorted(set(overrides) - self.known)
        if unknown:
            raise BadInput(
                f"customers[{index}].features: unknown feature names {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''} (see GET /customers/{{id}} for the names)"
            )
        for name, value in overrides.items():
            where = f"customers[{index}].features.{name}"
            if name in self.text:
                if value is not None and not isinstance(value, str):
                    raise BadInput(f"{where}: expected text, got {value!r}")
                if name == "stage" and value not in STAGES:
                    raise BadInput(f"{where}: expected one of {list(STAGES)}, got {value!r}")
                continue
            if isinstance(value, str):
                raise BadInput(f"{where}: expected a number, got {value!r}")
            if value is None:
                if name in self.never_missing:
                    raise BadInput(
                        f"{where}: expected a number (never missing: 0 for none), got null"
                    )
                continue
            if isinstance(value, bool) != (name in self.flags):
                wanted = "true or false" if name in self.flags else "a number"
                raise BadInput(f"{where}: expected {wanted}, got {json.dumps(value)}")  # as sent
            if isinstance(value, bool):
                continue
            if name in self.whole_numbers and value != int(value):
                raise BadInput(f"{where}: expected a whole number, got {value!r}")
            if abs(value) >= MAX_NUMBER:
                raise BadInput(f"{where}: expected a number under 10^15 in size, got {value!r}")
            bounds = self.bounds.get(name)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise BadInput(
                    f"{where}: expected a number from {bounds[0]:g} to {bounds[1]:g}, got {value!r}"
                )
            if value < 0 and name not in self.signed:
                raise BadInput(f"{where}: expected a number >= 0, got {value!r}")

    def rows(
        self,
        requests: Sequence[tuple[str, Mapping[str, Any] | None]],
        stored: Mapping[str, Mapping[str, Any]],
    ) -> tuple[list[Mapping[str, Any]], list[bool]]:
        """The feature row of each (customer_id, overrides): stored or new, then overridden
        (rows without overrides are the stored mappings themselves, not copies)."""
        rows, known = [], []
        for index, (customer_id, overrides) in enumerate(requests):
            base = stored.get(customer_id)
            if overrides:
                self.check(index, overrides)
            row = base if base is not None else self.new_customer
            rows.append({**row, **overrides} if overrides else row)
            known.append(base is not None)
        return rows, known

    def columns_of(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Columns of arrays (numbers as float, missing as NaN; text as objects)."""
        return self._columns(rows)[0]

    def _columns(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, np.ndarray], Layout | None]:
        """:meth:`columns_of`, and the layout when every row is a stored Vector of it (the
        columns are then views of the rows' stacked float64 blocks)."""
        numeric = self.numeric
        stored = self._stored_numbers(rows)
        if stored is not None:  # vectors of one SQLite store: their float64 blocks, stacked
            layout, block = stored
            columns = dict(zip(numeric, block.T, strict=True))
            for name in self.text_columns:
                columns[name] = np.array([row.other.get(name) for row in rows], dtype=object)  # type: ignore[attr-defined]
            return columns, layout
        # One conversion for every number of every row (a request's rows are few): the
        # columns are views of that block. A row has every feature (stored vectors and the
        # new customer's do) unless a store was written for other models: then by name.
        values: list[Any] = []
        if numeric:
            pick = operator.itemgetter(*numeric)  # one name: the value itself (reshaped below)
            try:
                values = [pick(row) for row in rows]
            except KeyError:
                defaults = [self.defaults.get(name) for name in numeric]
                values = [
                    [row.get(name, d) for name, d in zip(numeric, defaults, strict=True)]
                    for row in rows
                ]
        block = np.array(values, dtype=float)
        columns = dict(zip(numeric, block.reshape(len(rows), len(numeric)).T, strict=True))
        for name in self.text_columns:
            columns[name] = np.array([row.get(name) for row in rows], dtype=object)
        return columns, None

    def _stored_numbers(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[Layout, np.ndarray] | None:
        """The layout and (rows, numeric) float64 when every row is a features.online.Vector
        of one layout holding all of this scorer's numbers; else None (rows are then read by
        name)."""
        vectors = [row for row in rows if type(row) is Vector]
        if not vectors or len(vectors) < len(rows):
            return None
        layout = vectors[0].layout
        if any(row.layout is not layout for row in vectors):
            return None
        index = self._layouts.get(id(layout))
        if index is None or index[0] is not layout:
            position = layout.position
            if not all(name in position for name in self.numeric):
                return None
            index = (
                layout,
                np.array([position[name] for name in self.numeric], dtype=np.intp),
                [_kind(name, layout) for name in self.reason_feature],
            )
            self._layouts = {id(layout): index}  # one store at a time
        stacked = np.frombuffer(b"".join([row.numbers for row in vectors]), dtype=np.float64)
        return layout, stacked.reshape(len(rows), -1)[:, index[1]]

    def compute(
        self,
        columns: Mapping[str, np.ndarray],
        horizon_days: int | None = None,
        clv_horizon_days: int | None = None,
    ) -> Scores:
        """The three models and the decision on columns of arrays (one row per customer).

        ``horizon_days`` asks the churn and stage models, ``clv_horizon_days`` the CLV model,
        for another horizon than the trained one.
        """
        c = self.champions
        matrix = c.churn.encoder_.transform(columns)
        approx = self.settings.contributions == "approx"
        churn, contributions = c.churn.scores(
            columns, matrix, horizon_days, approx_contributions=approx
        )
        contributions = contributions[:, :-1]
        shared = matrix if self.shared else None
        stage_p = c.stage.stage_probabilities(columns, horizon_days, matrix=shared)
        value = c.clv.predict_columns(columns, clv_horizon_days, (c.churn.encoder_, matrix))
        stage = np.asarray(columns["stage"]).astype(str)
        decisions = self.policy.decide(stage, churn, value["clv"])
        medium, high = self.settings.risk_medium, self.settings.risk_high
        risk = np.where(churn >= high, "high", np.where(churn >= medium, "medium", "low"))
        prospect = np.logical_or.reduce([stage == s for s in PROSPECT_STAGES])  # < np.isin's cost
        risk = np.where(prospect, PROSPECT, risk)
        top = largest(contributions, min(self.settings.reasons, contributions.shape[1]))
        return Scores(
            stage=stage,
            churn_probability=churn,
            churn_risk=risk,
            stage_probabilities=stage_p,
            next_stage=np.asarray(STAGES, dtype=object)[stage_p.argmax(axis=1)],
            expected_purchases=np.asarray(value["expected_purchases"], dtype=float),
            expected_spend=np.asarray(value["expected_spend"], dtype=float),
            clv=np.asarray(value["clv"], dtype=float),
            action=decisions.action,
            action_value=decisions.value,
            top_features=top,
            top_contributions=np.take_along_axis(contributions, top, axis=1),
        )

    def score(
        self, customer_ids: Sequence[str], rows: Sequence[Mapping[str, Any]], known: Sequence[bool]
    ) -> list[dict[str, Any]]:
        """One result dict per row, in order (the fields of serving.contracts.ScoreResult)."""
        columns, layout = self._columns(rows)
        s = self.compute(columns)
        # Python values column by column (tolist) and rows by zip, not numpy scalars and
        # indexing row by row: this loop is most of a large request's time in Python.
        names = self.reason_feature
        top = s.top_features.tolist()
        values = self._reason_values(rows, columns, layout, s.top_features)
        reasons = [
            [
                {
                    "feature": names[j],
                    "value": v,
                    "contribution": c,
                    "direction": "raises risk" if c > 0 else "lowers risk",
                }
                for j, v, c in zip(js, vs, cs, strict=True)
            ]
            for js, vs, cs in zip(top, values, s.top_contributions.tolist(), strict=True)
        ]
        probabilities = [dict(zip(STAGES, p, strict=True)) for p in s.stage_probabilities.tolist()]
        # The columns' tolist() are str and float already (str arrays, object arrays of str).
        every = zip(
            customer_ids, [bool(k) for k in known], s.stage.tolist(),
            s.churn_probability.tolist(), s.churn_risk.tolist(), s.next_stage.tolist(),
            probabilities, s.expected_purchases.tolist(), s.expected_spend.tolist(),
            s.clv.tolist(), s.action.tolist(), s.action_value.tolist(), reasons,
            itertools.repeat(self.champions.versions), strict=False,
        )  # fmt: skip
        return [dict(zip(RESULT_FIELDS, fields, strict=True)) for fields in every]

    def _reason_values(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Mapping[str, np.ndarray],
        layout: Layout | None,
        top: np.ndarray,
    ) -> list[list[Any]]:
        """The customer's value of each reason's feature, as its row gives it (whole numbers
        as int, flags as bool, missing or non-finite as None). Stored vectors of one layout
        are read from the request's columns, not one by one."""
        names = self.reason_feature
        if layout is None:
            return [
                [shown(row.get(names[j])) for j in js]
                for row, js in zip(rows, top.tolist(), strict=True)
            ]
        picked = [columns[name] for name in names]
        kinds = self._layouts[id(layout)][2]  # set by _stored_numbers for this layout
        out = []
        for i, js in enumerate(top.tolist()):
            row_values = []
            for j in js:
                v = picked[j][i]
                kind = kinds[j]
                if kind == TEXT:
                    row_values.append(v)
                elif v != v:
                    row_values.append(None)
                elif kind == NUMBER:
                    row_values.append(float(v))
                else:
                    row_values.append(bool(v) if kind == FLAG else int(v))
            out.append(row_values)
        return out


# The keys of a result dict, in the order of serving.contracts.ScoreResult.
RESULT_FIELDS = (
    "customer_id", "known", "stage", "churn_probability", "churn_risk", "next_stage",
    "next_stage_probabilities", "expected_purchases", "expected_spend", "clv", "action",
    "action_value", "reasons", "model_versions",
)  # fmt: skip
# Kinds of a stored feature's value (serving.scoring.Scorer._reason_values).
NUMBER, WHOLE, FLAG, TEXT = range(4)


def _kind(name: str, layout: Layout) -> int:
    if name not in layout.position:
        return TEXT
    if name in layout.flags:
        return FLAG
    return WHOLE if name in layout.integers else NUMBER


def shown(value: Any) -> Any:
    """A value as the service gives it back: a non-finite number as None."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def largest(values: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) column indices of each row's ``k`` largest absolute values, largest first
    (a tie goes to the lower index)."""
    top = np.empty((len(values), k), dtype=np.int64)
    _largest(np.asarray(values, dtype=np.float64), top)
    return top


@numba.njit(cache=True, nogil=True)
def _largest(values: np.ndarray, top: np.ndarray) -> None:
    k = top.shape[1]
    best = np.empty(k, dtype=np.float64)
    for r in range(values.shape[0]):
        filled = 0
        for f in range(values.shape[1]):
            v = abs(values[r, f])
            if filled == k and not v > best[k - 1]:
                continue
            at = min(filled, k - 1)
            while at > 0 and v > best[at - 1]:
                best[at], top[r, at] = best[at - 1], top[r, at - 1]
                at -= 1
            best[at], top[r, at] = v, f
            filled = min(filled + 1, k)
