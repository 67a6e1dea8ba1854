"""Settings: documented defaults, file, environment, and errors that name the bad key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clm.errors import ConfigError
from clm.settings import ClmSettings, load_settings, parse_column_mapping


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in __import__("os").environ if n.startswith("CLM_")]:
        monkeypatch.delenv(name)


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings()
    assert s.stages.churn_inactivity_days == 180
    assert (s.labels.churn_horizon_days, s.labels.clv_horizon_days) == (90, 365)
    assert s.features.purchase_windows_days == [30, 90, 365]
    for section in ("data", "stages", "features", "labels"):
        model = type(getattr(s, section))
        undocumented = [name for name, f in model.model_fields.items() if not f.description]
        assert undocumented == [], f"{section}: {undocumented} have no description"


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clm.toml").write_text(
        "[stages]\nchurn_inactivity_days = 120\n[labels]\nclv_horizon_days = 180\n"
        "[data.columns.transactions]\ntimestamp = 'order_date'\n"
    )
    s = load_settings()
    assert s.stages.churn_inactivity_days == 120
    assert s.data.columns == {"transactions": {"timestamp": "order_date"}}
    monkeypatch.setenv("CLM_STAGES__CHURN_INACTIVITY_DAYS", "60")
    s = load_settings()
    assert s.stages.churn_inactivity_days == 60  # the environment wins
    assert s.labels.clv_horizon_days == 180


def test_config_path_from_option_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[labels]\nchurn_horizon_days = 30\n")
    assert load_settings(path).labels.churn_horizon_days == 30
    monkeypatch.setenv("CLM_CONFIG", str(path))
    assert load_settings().labels.churn_horizon_days == 30
    with pytest.raises(ConfigError, match=r"settings file .*missing.toml not found"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"settings file .* is a folder; expected a .toml file"):
        load_settings(tmp_path)
    # /dev/null is the shell's empty file: no settings, the defaults.
    assert load_settings(Path("/dev/null")).labels.churn_horizon_days == 90


def test_a_bad_value_is_named_where_it_was_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clm.toml"
    path.write_text('[training]\nn_estimators = "x"\nmax_depth = 3\n')
    monkeypatch.setenv("CLM_TRAINING__MAX_DEPTH", "deep")
    with pytest.raises(ConfigError) as bad:
        load_settings(path)
    assert str(bad.value) == (
        f"{path}: setting 'training.n_estimators': Input should be a valid integer, unable to "
        "parse string as an integer (got 'x'); CLM_TRAINING__MAX_DEPTH: setting "
        "'training.max_depth': Input should be a valid integer, unable to parse string as an "
        "integer (got 'deep')"
    )
    # The environment wins over the file: its value is the one refused, and it is named.
    monkeypatch.setenv("CLM_TRAINING__N_ESTIMATORS", "abc")
    with pytest.raises(ConfigError, match=r"^CLM_TRAINING__N_ESTIMATORS: setting 'training.n_"):
        load_settings(path)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "clm.toml"
    path.write_text("[stages]\nchurn_windw = 3\n")
    with pytest.raises(ConfigError, match=r"clm.toml: unknown setting 'stages.churn_windw'"):
        load_settings(path)
    path.write_text("[modelz]\nx = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'modelz'"):
        load_settings(path)


def test_bad_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "clm.toml"
    path.write_text("[labels]\nchurn_horizon_days = 'soon'\n")
    with pytest.raises(ConfigError, match=r"setting 'labels.churn_horizon_days'.*'soon'"):
        load_settings(path)
    path.write_text("[data.columns.orders]\ntimestamp = 'x'\n")
    with pytest.raises(ConfigError, match="unknown table 'orders'"):
        load_settings(path)


def test_unknown_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLM_STAGES__CHURN_DAYS", "3")
    with pytest.raises(ConfigError, match="CLM_STAGES__CHURN_DAYS is not a clm setting"):
        load_settings()


def test_column_mapping_option() -> None:
    assert parse_column_mapping(["timestamp=order_date", "customers.customer_id=id"]) == {
        "*": {"timestamp": "order_date"},
        "customers": {"customer_id": "id"},
    }
    with pytest.raises(ConfigError, match="is not CONTRACT=SOURCE"):
        parse_column_mapping(["timestamp"])
    with pytest.raises(ConfigError, match="unknown table 'orders'"):
        parse_column_mapping(["orders.amount=x"])
    # One contract column mapped twice: refused, naming both; the same mapping twice is one.
    with pytest.raises(ConfigError) as twice:
        parse_column_mapping(["customer_id=client", "customer_id=total"])
    assert str(twice.value) == (
        "--column 'customer_id=total': customer_id is already mapped to 'client'; map each "
        "contract column once"
    )
    assert parse_column_mapping(["amount=total", "amount=total"]) == {"*": {"amount": "total"}}
    assert parse_column_mapping(["amount=a", "events.amount=b"])["events"] == {"amount": "b"}


def test_settings_are_plain_data() -> None:
    s = ClmSettings()
    with pytest.raises(ValueError):
        s.stages.churn_inactivity_days = 0


def test_artifacts_go_beside_a_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clm.settings import TrainingSettings
    from clm.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, artifacts = tracking_uri(TrainingSettings(tracking_uri=f"sqlite:///{tmp_path}/runs/m.db"))
    assert uri == f"sqlite:///{tmp_path}/runs/m.db"
    assert artifacts == (tmp_path / "runs" / "artifacts").as_uri()
    assert tracking_uri(TrainingSettings(tracking_uri="http://127.0.0.1:5000")) == (
        "http://127.0.0.1:5000",
        None,
    )
    monkeypatch.chdir(tmp_path)
    uri, artifacts = tracking_uri(TrainingSettings())
    assert uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert artifacts == (tmp_path / "mlflow" / "artifacts").as_uri()


def test_a_sqlite_store_that_cannot_be_opened_fails_at_once_and_reads_never_create_one(
    tmp_path: Path,
) -> None:
    import sqlite3

    from clm.errors import ClmError
    from clm.tracking import check_sqlite_store

    missing = tmp_path / "typo" / "m.db"
    with pytest.raises(ClmError, match=f"no MLflow store at {missing}: run clm train first"):
        check_sqlite_store(missing, create=False)
    assert not missing.parent.exists()  # a read never creates the store (or its folder)
    check_sqlite_store(missing, create=True)  # clm train may
    assert missing.is_file()
    check_sqlite_store(missing, create=False)
    # A file that is no database, and a place no file can be made: our error, not
    # MLflow's after two minutes of retries.
    junk = tmp_path / "junk.db"
    junk.write_text("not a database " * 100)
    for path in (junk, Path("/proc/clm-store.db")):
        with pytest.raises(ClmError, match=f"cannot open the MLflow store {path} .*tracking_uri"):
            check_sqlite_store(path, create=True)
    with sqlite3.connect(missing) as con:  # still an empty, usable database
        assert con.execute("PRAGMA schema_version").fetchone() == (0,)


def test_a_sqlite_uri_is_decoded_as_mlflow_decodes_it(tmp_path: Path) -> None:
    import sqlite3

    from clm.settings import TrainingSettings
    from clm.tracking import check_sqlite_store, sqlite_path
    from training.registry import configure_tracking

    store = tmp_path / "my dir" / "m.db"
    store.parent.mkdir()
    sqlite3.connect(store).close()
    encoded = f"sqlite:///{str(store.parent).replace(' ', '%20')}/m.db"
    assert sqlite_path(encoded) == store
    assert sqlite_path(f"sqlite:///{store}?timeout=20") == store
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("http://x") is None
    check_sqlite_store(sqlite_path(encoded), create=False)  # type: ignore[arg-type]
    # The registry commands set up no experiment: the store is left as it was.
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        configure_tracking(TrainingSettings(tracking_uri=encoded), create=False)
    finally:  # MLflow's URIs are process-wide
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    with sqlite3.connect(store) as con:
        assert con.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_service_workers_default_to_one_per_usable_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from clm.settings import usable_cores

    cores = len(os.sched_getaffinity(0))
    assert load_settings().serving.workers is None
    assert load_settings().serving.worker_count() == usable_cores()
    monkeypatch.setenv("CLM_SERVING__WORKERS", "3")
    assert load_settings().serving.worker_count() == 3
    # A container's CPU quota caps the count (cgroup v2 cpu.max: quota and period in µs).
    quota = tmp_path / "cpu.max"
    assert usable_cores(tmp_path / "absent") == cores
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == cores
    quota.write_text("100000 100000\n")
    assert usable_cores(quota) == 1
    quota.write_text("50000 100000\n")  # half a core still runs one worker
    assert usable_cores(quota) == 1
    quota.write_text(f"{(cores + 4) * 100000} 100000\n")  # more quota than cores
    assert usable_cores(quota) == cores
    if cores >= 2:
        quota.write_text("150000 100000\n")
        assert usable_cores(quota) == 2
    quota.write_text("garbage\n")
    assert usable_cores(quota) == cores


def test_a_clm_variable_that_is_not_json_is_named_with_the_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLM_FEATURES__PURCHASE_WINDOWS_DAYS", "7,14")
    with pytest.raises(
        ConfigError,
        match=r"^CLM_FEATURES__PURCHASE_WINDOWS_DAYS: cannot be read for \[features\] .*"
        r"written as JSON, e.g. CLM_FEATURES__PURCHASE_WINDOWS_DAYS='\[30, 90, 365\]'$",
    ):
        load_settings()
    monkeypatch.setenv("CLM_FEATURES__PURCHASE_WINDOWS_DAYS", "[7, 14]")
    assert load_settings().features.purchase_windows_days == [7, 14]


def test_config_show_says_a_token_from_clm_api_token_is_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from clm.commands import show_settings

    monkeypatch.delenv("CLM_API_TOKEN", raising=False)
    show_settings(ClmSettings())
    assert "api_token" not in capsys.readouterr().out
    monkeypatch.setenv("CLM_API_TOKEN", "tok-98765")
    show_settings(ClmSettings())
    out = capsys.readouterr().out
    assert "# api_token = (set by CLM_API_TOKEN; not shown)" in out and "tok-98765" not in out


def test_cors_origins_are_scheme_and_host() -> None:
    from clm.settings import ServingSettings

    assert ServingSettings(cors_origins=["https://crm.example.com", "http://localhost:8080"])
    assert ServingSettings(cors_origins=["*"]).cors_origins == ["*"]
    # As a browser sends them: lower case, without the scheme's default port.
    given = ["https://CRM.Example.com:443", "HTTP://localhost:80", "http://[::1]:8080"]
    assert ServingSettings(cors_origins=given).cors_origins == [
        "https://crm.example.com", "http://localhost", "http://[::1]:8080",
    ]  # fmt: skip
    for bad in ("crm.example.com", "https://crm.example.com/app", "https://*.example.com"):
        with pytest.raises(ValueError, match=rf"'{re.escape(bad)}' is no origin \(expected"):
            ServingSettings(cors_origins=[bad])
