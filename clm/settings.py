"""One settings object, read from ``clm.toml`` and ``CLM_*`` environment variables.

Precedence, highest first: environment variables (``CLM_STAGES__CHURN_INACTIVITY_DAYS=120``),
then the settings file (``--config PATH``, else ``$CLM_CONFIG``, else ``./clm.toml`` when it
exists), then the defaults documented on each field. An unknown key is an error that names it.
Nothing happens at import time.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from clm.errors import ConfigError

__all__ = [
    "AS_OF_KEY",
    "MEANING_KEY",
    "TABLES",
    "ClmSettings",
    "DataSettings",
    "FeatureSettings",
    "LabelSettings",
    "StageSettings",
    "TrainingSettings",
    "feature_meaning",
    "load_settings",
    "meaning_changes",
    "parse_column_mapping",
    "usable_cores",
]

TABLES = ("transactions", "events", "customers")
ENV_PREFIX = "CLM_"
# Environment variables that are read directly, not settings fields.
_ENV_NOT_SETTINGS = {"CLM_CONFIG", "CLM_API_TOKEN"}


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (``docker run --cpus 1`` leaves every core in the affinity but allows one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    try:
        allowed = -(-int(quota) // int(period))  # a quota of 1.5 cores runs on 2
    except (ValueError, ZeroDivisionError):
        return cores
    return max(1, min(cores, allowed))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _opens(zone: str) -> bool:
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class DataSettings(_Section):
    columns: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description=(
            "Column mapping from the contract's names to the names in your files, per table "
            "('transactions', 'events', 'customers') or '*' for every table, e.g. "
            "[data.columns.transactions] timestamp = 'order_date'."
        ),
    )

    exclude_attributes: list[str] = Field(
        default_factory=list,
        description="Columns of the customers table not read as attributes: values that "
        "change over time (lifetime totals, a last-order date, a status) would leak the "
        "outcome into training, and ids such as an email carry no signal.",
    )

    amount_scale: float = Field(
        1.0,
        ge=1e-6,
        le=1e6,
        allow_inf_nan=False,
        description="What turns an amount as written into currency units: 0.01 for amounts "
        "in cents (Stripe and Adyen exports), 1 for amounts in units.",
    )

    void_statuses: list[str] = Field(
        default_factory=lambda: ["cancelled", "canceled", "voided", "void", "failed", "declined"],
        description="Order statuses (the transactions' status column, in any case) that are "
        "no purchase: such a row counts only as activity, as an order of amount 0 does.",
    )

    timezone: str = Field(
        "UTC",
        description="The business's time zone (an IANA name such as Europe/Berlin): purchase "
        "days, windows and cutoffs are its calendar days; naive timestamps are read as its "
        "local time and ones with an offset or zone are converted to it.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # The IANA names (zoneinfo also opens files such as 'posix/...', and the system's
        # list may hold 'localtime', the machine's own zone: DuckDB knows neither).
        zones = zoneinfo.available_timezones() - {"localtime"}
        if value != "UTC" and (value not in zones if zones else not _opens(value)):
            raise ValueError(
                f"unknown time zone {value!r} (expected an IANA name such as UTC, "
                "Europe/Berlin or America/New_York)"
            )
        return value

    @field_validator("columns")
    @classmethod
    def _known_tables(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for table in value:
            if table not in (*TABLES, "*"):
                raise ValueError(
                    f"unknown table '{table}' in data.columns (expected one of "
                    f"{', '.join(TABLES)} or '*')"
                )
        return value


class StageSettings(_Section):
    churn_inactivity_days: int = Field(
        180, ge=1, description="A buyer with no purchase in this many days is 'churned'."
    )
    advocacy_lookback_days: int = Field(
        365, ge=1, description="An advocacy signal counts for this many days."
    )
    promoter_min_score: float = Field(
        9.0, ge=0, le=10, description="An NPS answer at or above this is a promoter (advocacy)."
    )
    lead_event_types: list[str] = Field(
        default_factory=lambda: ["signup", "email_subscribe", "add_to_cart", "contact"],
        description="Event types that make a visitor a lead (consideration).",
    )
    advocacy_event_types: list[str] = Field(
        default_factory=lambda: ["referral", "review"],
        description="Event types that are advocacy signals (besides promoter NPS answers).",
    )
    cancel_event_types: list[str] = Field(
        default_factory=lambda: ["cancel"],
        description="Event types that are an explicit cancellation (churn at once).",
    )
    nps_event_types: list[str] = Field(
        default_factory=lambda: ["nps"],
        description="Event types whose 'value' is an NPS answer (0-10).",
    )


class FeatureSettings(_Section):
    purchase_windows_days: list[int] = Field(
        default_factory=lambda: [30, 90, 365],
        description="Windows for purchase and spend counts (purchases_90d, spend_90d).",
    )
    event_windows_days: list[int] = Field(
        default_factory=lambda: [7, 30, 90],
        description="Windows for event counts per type (session_events_30d).",
    )
    trend_recent_days: int = Field(30, ge=1, description="Recent part of the engagement trend.")
    trend_prior_days: int = Field(
        60, ge=1, description="The period before it that the recent part is compared with."
    )
    event_types: list[str] | None = Field(
        None,
        description=(
            "Event types that get their own count columns. Default: every type seen before "
            "the (latest) cutoff, so the columns never depend on data after it."
        ),
    )
    max_event_types: int = Field(
        60, ge=1, description="More distinct event types than this is an error (set event_types)."
    )
    support_event_types: list[str] = Field(
        default_factory=lambda: ["support_ticket"], description="Counted as support_tickets."
    )
    referral_event_types: list[str] = Field(
        default_factory=lambda: ["referral"], description="Counted as referrals."
    )
    review_event_types: list[str] = Field(
        default_factory=lambda: ["review"], description="Counted as reviews."
    )
    email_sent_event_type: str = Field("email_sent", description="An email sent (rate base).")
    email_open_event_type: str = Field("email_open", description="An email opened.")
    email_click_event_type: str = Field("email_click", description="A link in an email clicked.")
    email_rate_window_days: int = Field(
        365, ge=1, description="Window for the email open and click rates."
    )
    activity_window_days: int = Field(
        365, ge=1, description="Window for the number of channels used (omnichannel)."
    )
    stale_after_days: int = Field(
        31,
        ge=0,
        description="A cutoff more days than this after the data's last record gets a warning "
        "(the export may be stale, or the date wrong).",
    )

    @field_validator("purchase_windows_days", "event_windows_days")
    @classmethod
    def _positive_windows(cls, value: list[int]) -> list[int]:
        if not value or any(w < 1 for w in value):
            raise ValueError("windows must be a non-empty list of whole days >= 1")
        return sorted(set(value))


# Feature settings that pick which columns exist, or are in their names (purchases_90d,
# _trend_30d_vs_prior_60d: a model lacking a column names it), or only warn. (The activity
# window is in channels_365d, but also bounds active days, named by the event windows.)
# The rest change what a feature of the same name means.
_NAMING_ONLY = {
    "event_types", "max_event_types", "stale_after_days", "purchase_windows_days",
    "event_windows_days", "trend_recent_days", "trend_prior_days", "email_rate_window_days",
}  # fmt: skip
# Where a logged model keeps them (its MLmodel metadata, read without unpickling it), and
# the cutoff its training labels reach.
MEANING_KEY = "clm_feature_settings"
AS_OF_KEY = "clm_trained_as_of"


def feature_meaning(settings: ClmSettings) -> dict[str, Any]:
    """The settings that decide what each feature's value means (``stages.*``, ``features.*``
    but those that only pick columns or warn), flat by dotted key: a model records them,
    and scoring with others would feed it features it was not trained on."""
    meaning: dict[str, Any] = {}
    for section in ("stages", "features"):
        values = getattr(settings, section).model_dump(mode="json")
        meaning |= {f"{section}.{k}": v for k, v in values.items() if k not in _NAMING_ONLY}
    # What a day is and what a purchase is. (Not data.amount_scale: it describes the export,
    # so that amounts are currency units under any scale, and one export may be in cents.)
    meaning["data.timezone"] = settings.data.timezone
    meaning["data.void_statuses"] = sorted({s.strip().lower() for s in settings.data.void_statuses})
    return meaning


def meaning_changes(trained: dict[str, Any], now: dict[str, Any], label: str = "now") -> list[str]:
    """``key = trained value (now value)`` for each setting of :func:`feature_meaning` that
    differs between what a model was trained with and ``now``, by key (keys only one side
    recorded are not compared; lists of event types in any order)."""
    return [
        f"{key} = {json.dumps(value)} ({label} {json.dumps(now[key])})"
        for key, value in sorted(trained.items())
        if key in now and _canonical(now[key]) != _canonical(value)
    ]


def _canonical(value: Any) -> Any:
    return sorted(set(value)) if isinstance(value, list) else value


class LabelSettings(_Section):
    churn_horizon_days: int = Field(
        90, ge=1, description="Churn label: no purchase in [as_of, as_of + this)."
    )
    stage_horizon_days: int = Field(
        90, ge=1, description="Next-stage label: the stage at as_of + this."
    )
    clv_horizon_days: int = Field(
        365, ge=1, description="CLV labels: purchase days and spend in [as_of, as_of + this)."
    )


class TrainingSettings(_Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. Unset: MLFLOW_TRACKING_URI, else the local store "
        "sqlite:///mlflow/mlflow.db with artifacts in mlflow/artifacts.",
    )
    experiment: str = Field("clm", description="MLflow experiment of the training runs.")
    folds: int = Field(
        4,
        ge=2,
        le=24,
        description="Backtest cutoffs per model: the evaluation fold (as_of - horizon) and "
        "training cutoffs fold_step_days apart, the latest one horizon before it.",
    )
    fold_step_days: int = Field(
        60,
        ge=7,
        description="Days between consecutive training cutoffs (the latest is one horizon "
        "before the evaluation fold).",
    )
    min_history_days: int = Field(
        90, ge=1, description="History before the earliest cutoff (first record to cutoff)."
    )
    seed: int = Field(42, description="Seed of XGBoost, Optuna's sampler and any sampling.")
    n_jobs: int = Field(
        0, ge=0, description="XGBoost threads; 0 = one per core. Parallel jobs: 1 each."
    )
    trials: int = Field(20, ge=1, description="Optuna trials per model with --tune.")
    n_estimators: int = Field(200, ge=10, description="Most boosting rounds (early stopping).")
    learning_rate: float = Field(0.15, gt=0, le=1, description="XGBoost learning rate.")
    max_depth: int = Field(4, ge=1, le=16, description="XGBoost tree depth.")
    min_child_weight: float = Field(5.0, ge=0, description="XGBoost min child weight.")
    subsample: float = Field(0.8, gt=0, le=1, description="XGBoost row subsample per tree.")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="XGBoost column subsample.")
    reg_lambda: float = Field(1.0, ge=0, description="XGBoost L2 regularisation.")
    margin: float = Field(
        0.3, gt=0, le=1, description="Gross margin on spend, for the discounted CLV."
    )
    annual_discount_rate: float = Field(
        0.1, ge=0, le=1, description="Annual discount rate of future margin in the CLV."
    )
    promotion_min_improvement: float = Field(
        0.0,
        ge=0,
        description="A challenger becomes champion only if better by at least this on the "
        "gate metric, and never on a tie (churn: AUC on buyers, stage: log loss, clv: MAE "
        "relative to the mean spend).",
    )


class ServingSettings(_Section):
    host: str = Field("127.0.0.1", description="Address clm serve binds to.")
    port: int = Field(3000, ge=1, le=65535, description="Port clm serve listens on.")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Service worker processes. Unset: one per core this process may use "
        "(its CPU affinity, and a container's CPU quota), each booster on one thread.",
    )
    api_token: str | None = Field(
        None,
        description="Bearer token required on /score and /customers (also CLM_API_TOKEN). "
        "Unset: no authentication, and clm serve binds to loopback addresses only.",
    )
    online_store: str = Field(
        "sqlite:///mlflow/online.db",
        description="Online feature store: sqlite:///PATH (the embedded default) or "
        "redis://HOST:PORT/DB[?prefix=NAME].",
    )
    max_customers: int = Field(
        1000, ge=1, le=1000, description="Most customers in one /score request (1 to 1,000)."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins whose browser pages may call the service (CORS), such as "
        "https://crm.example.com, or '*' for any; none by default.",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """Origins as browsers send them: lower case, without the scheme's default port."""
        origins = []
        for origin in value:
            found = re.fullmatch(
                r"(https?)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::(\d+))?", origin, re.I
            )
            if origin != "*" and not found:
                raise ValueError(
                    f"{origin!r} is no origin (expected scheme and host, such as "
                    "https://crm.example.com or http://localhost:8080, with no path or "
                    "wildcard; or '*' for any)"
                )
            if found:
                scheme, host, port = found.groups()
                default = port is None or port == {"http": "80", "https": "443"}[scheme.lower()]
                origin = f"{scheme.lower()}://{host.lower()}" + ("" if default else f":{port}")
            origins.append(origin)
        return origins

    max_batch_rows: int = Field(
        256,
        ge=1,
        description="Concurrent /score requests of a worker are scored in one pass while their "
        "customers add up to at most this many (a request is never split; 1: no merging).",
    )
    risk_medium: float = Field(
        0.3, gt=0, lt=1, description="churn_probability at or above this is medium risk."
    )
    risk_high: float = Field(
        0.6, gt=0, lt=1, description="churn_probability at or above this is high risk."
    )
    reasons: int = Field(3, ge=1, le=20, description="Top features returned as reasons.")
    contributions: Literal["exact", "approx"] = Field(
        "exact",
        description="Feature contributions behind the reasons: exact (TreeSHAP) or approx "
        "(Saabas: XGBoost's approx_contribs, a little cheaper than the exact ones in batch "
        "scoring, same top feature 99% of the time but the same top 3 only about half the "
        "time).",
    )
    tracing: bool = Field(
        False,
        description="Trace /score and /customers with BentoML's OpenTelemetry middleware "
        "(export configured in BentoML's own settings). Off, those routes skip it: it costs "
        "about 0.2 ms a request and records nothing until an exporter is set up.",
    )

    def worker_count(self) -> int:
        """``workers``, or one per usable core when it is unset."""
        return self.workers if self.workers is not None else usable_cores()

    @model_validator(mode="after")
    def _bands_in_order(self) -> ServingSettings:
        if self.risk_medium >= self.risk_high:
            raise ValueError(
                f"risk_medium ({self.risk_medium}) must be below risk_high ({self.risk_high})"
            )
        return self


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["retention", "growth"] = Field(
        description="retention: value = churn_probability x uplift x clv - cost; growth: "
        "value = (1 - churn_probability) x uplift x clv - cost."
    )
    cost: float = Field(ge=0, description="Cost of the action per customer, currency units.")
    uplift: float = Field(
        ge=0,
        le=1,
        description="Assumed success rate: the share of the value at stake it saves "
        "(retention) or adds (growth).",
    )
    stages: list[str] = Field(description="Lifecycle stages the action applies to.")
    min_clv: float = Field(0.0, ge=0, description="Only for customers with at least this CLV.")


def _default_playbook() -> dict[str, Action]:
    return {
        "vip_outreach": Action(
            kind="retention", cost=25.0, uplift=0.3, stages=["retention", "advocacy"], min_clv=200
        ),
        "retention_offer": Action(
            kind="retention", cost=5.0, uplift=0.15, stages=["purchase", "retention", "advocacy"]
        ),
        "win_back": Action(kind="retention", cost=3.0, uplift=0.05, stages=["churned"]),
        "onboarding_followup": Action(kind="growth", cost=1.0, uplift=0.1, stages=["purchase"]),
        "referral_ask": Action(kind="growth", cost=0.5, uplift=0.05, stages=["advocacy"]),
        "nurture": Action(
            kind="growth", cost=0.2, uplift=0.05, stages=["awareness", "consideration"]
        ),
    }


class DecisionSettings(_Section):
    actions: dict[str, Action] = Field(
        default_factory=_default_playbook,
        description="The playbook: action name -> kind, cost, uplift, stages, min_clv. The "
        "action with the highest positive expected value is chosen; else 'none'.",
    )
    budget: int | None = Field(
        None,
        ge=0,
        description="Most costly actions in one batch scoring run (highest value first).",
    )


class SparkSettings(_Section):
    master: str = Field("local[*]", description="Spark master for clm score --engine spark.")
    shuffle_partitions: int = Field(
        8, ge=1, description="spark.sql.shuffle.partitions (raise it on a cluster)."
    )
    driver_memory: str = Field("4g", description="spark.driver.memory (local mode: all of it).")


class ReportSettings(_Section):
    months: int = Field(
        12, ge=2, le=60, description="Months of history in the report's monthly figures."
    )
    period_months: int = Field(
        3, ge=1, le=12, description="Length of a period of the funnel's conversion rates."
    )
    cohort_quarters: int = Field(8, ge=1, le=40, description="Signup-quarter cohorts shown.")
    channel_attribute: str = Field(
        "acquisition_channel",
        description="Customer attribute holding the acquisition channel (else first touch).",
    )
    top_customers: int = Field(
        25, ge=1, le=1000, description="Rows of the top at-risk high-value customers."
    )

    @model_validator(mode="after")
    def _period_fits(self) -> ReportSettings:
        if self.period_months > self.months:
            raise ValueError(
                f"report.period_months ({self.period_months}) must not exceed report.months "
                f"({self.months})"
            )
        return self


class ClmSettings(BaseSettings):
    """Every threshold, window and horizon of clm, with its documented default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    data: DataSettings = Field(default_factory=DataSettings)
    stages: StageSettings = Field(default_factory=StageSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return (env_settings, init_settings)


def _config_path(explicit: Path | None) -> Path | None:
    from_env = os.environ.get("CLM_CONFIG")
    if explicit is not None or from_env:
        path = explicit if explicit is not None else Path(str(from_env))
        said = "" if explicit is not None else " (from CLM_CONFIG)"
        if not path.exists():
            raise ConfigError(f"settings file {path}{said} not found")
        if path.is_dir():
            raise ConfigError(f"settings file {path}{said} is a folder; expected a .toml file")
        return path  # a file, or one to read such as /dev/null (no settings)
    default = Path("clm.toml")
    return default if default.is_file() else None


def _check_environment() -> None:
    """Refuse CLM_* variables that name no setting (a typo would otherwise be ignored)."""
    sections = ClmSettings.model_fields
    for name in sorted(os.environ):
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_SETTINGS:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        section = sections.get(parts[0])
        annotation = section.annotation if section else None
        known = (
            annotation is not None
            and isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
            and (len(parts) == 1 or parts[1] in annotation.model_fields)
        )
        if not known:
            raise ConfigError(f"environment variable {name} is not a clm setting")


def _describe(error: ValidationError, origin: str) -> str:
    """Each problem, under where its value came from: the CLM_* variable that set it (the
    environment wins over the file), else the settings file ``origin``."""
    environment = {k.upper(): k for k in os.environ}
    said: dict[str, list[str]] = {}
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        key = ".".join(parts)
        if item["type"] == "extra_forbidden":
            problem = f"unknown setting '{key}'"
        else:
            problem = f"setting '{key}': {item['msg']} (got {item.get('input')!r})"
        variables = ["CLM_" + "__".join(parts[:2]).upper(), f"CLM_{parts[0].upper()}"]
        where = next((environment[v] for v in variables if v in environment), origin)
        said.setdefault(where, []).append(problem)
    return "; ".join(f"{where}: " + "; ".join(problems) for where, problems in said.items())


def load_settings(config: Path | None = None, **overrides: Any) -> ClmSettings:
    """Read the settings file and environment; ``overrides`` are section dicts that win last."""
    path = _config_path(config)
    origin = str(path) if path else "settings"
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    _check_environment()
    try:
        settings = ClmSettings(**values)
        for section, changes in overrides.items():
            current = getattr(settings, section).model_dump()
            current.update(changes)
            setattr(settings, section, type(getattr(settings, section))(**current))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from exc
    except SettingsError as exc:  # a CLM_* value that is not JSON where JSON is needed
        raise ConfigError(_describe_environment(exc)) from exc
    return settings


def _describe_environment(error: SettingsError) -> str:
    """pydantic-settings names only the section ("features") of the variable it could not
    parse: name the variables too, and the form."""
    found = re.search(r'field "(\w+)"', str(error))
    section = found.group(1) if found else ""
    names = sorted(k for k in os.environ if k.upper().startswith(f"CLM_{section.upper()}"))

    def unreadable(name: str) -> bool:  # a whole section, or a list or table field, not JSON
        try:
            json.loads(os.environ[name])
        except ValueError:
            return True
        return False

    names = [n for n in names if unreadable(n)] or names
    cause = f" ({error.__cause__})" if error.__cause__ else ""
    return (
        f"{', '.join(names) or 'a CLM_ variable'}: cannot be read for [{section}]{cause}; "
        "lists and tables are written as JSON, e.g. CLM_FEATURES__PURCHASE_WINDOWS_DAYS="
        "'[30, 90, 365]'"
    )


def parse_column_mapping(items: list[str]) -> dict[str, dict[str, str]]:
    """``['timestamp=order_date', 'customers.customer_id=id']`` -> ``{'*': {...}, ...}``."""
    mapping: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, source = item.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise ConfigError(
                f"--column '{item}' is not CONTRACT=SOURCE "
                "(e.g. --column timestamp=order_date or --column transactions.amount=total)"
            )
        table, dot, column = target.strip().rpartition(".")
        table_key: Literal["*"] | str = table if dot else "*"
        if table_key not in (*TABLES, "*"):
            raise ConfigError(
                f"--column '{item}': unknown table '{table_key}' (expected {', '.join(TABLES)})"
            )
        entries = mapping.setdefault(table_key, {})
        if entries.get(column, source.strip()) != source.strip():
            raise ConfigError(
                f"--column '{item}': {target.strip()} is already mapped to "
                f"'{entries[column]}'; map each contract column once"
            )
        entries[column] = source.strip()
    return mapping
