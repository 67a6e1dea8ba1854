"""The Dockerfile cannot be built here (no Docker engine): check what it names exists."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)  # join continued lines
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_every_copied_path_exists() -> None:
    copies = [args for op, args in instructions() if op == "COPY"]
    assert copies
    for args in copies:
        *sources, _target = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source


def test_slim_python_base_non_root_user_and_health_check() -> None:
    ops = dict(instructions())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert re.fullmatch(r"python:3\.11-slim", ops["FROM"]), ops["FROM"]
    assert project["requires-python"] == ">=3.11"
    assert ops["USER"] not in ("root", "0")
    assert "/readyz" in ops["HEALTHCHECK"]  # BentoML's readiness route (tested live)
    assert "useradd" in ops["RUN"] or any(
        "useradd" in args for op, args in instructions() if op == "RUN"
    )


def test_install_uses_the_constraints_and_the_cpu_only_xgboost() -> None:
    runs = " ".join(args for op, args in instructions() if op == "RUN")
    assert "pip install -c constraints.txt ." in runs
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("xgboost-cpu") for d in dependencies)
    assert not any(re.match(r"xgboost[<>=]", d) for d in dependencies)
    assert re.search(r"^xgboost-cpu==", (ROOT / "constraints.txt").read_text(), re.M)


def test_command_is_the_clm_console_script_and_serve_accepts_its_options() -> None:
    ops = dict(instructions())
    command = [part.strip('" ') for part in ops["CMD"].strip("[]").split(",")]
    assert command[:2] == ["clm", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clm"] == "clm.cli:main"
    from typer.main import get_command

    from clm.cli import app

    serve = get_command(app).commands["serve"]  # type: ignore[attr-defined]
    options = {opt for param in serve.params for opt in param.opts}
    assert {part for part in command[2:] if part.startswith("--")} <= options
    assert "3000" in ops["EXPOSE"] and "--port 3000" in " ".join(command).replace(", ", " ")


def test_environment_names_real_settings() -> None:
    from clm.settings import ClmSettings

    names = re.findall(r"\b(CLM_[A-Z_]+)=", DOCKERFILE)
    assert names
    for name in set(names) - {"CLM_API_TOKEN", "CLM_CONFIG"}:  # read directly, not settings
        section, _, field = name.removeprefix("CLM_").lower().partition("__")
        assert field in ClmSettings.model_fields[section].annotation.model_fields, name  # type: ignore[union-attr]
