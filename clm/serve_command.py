"""``clm serve``: checks, then hands the process to ``bentoml serve``."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

from clm.errors import ClmError
from clm.settings import ClmSettings

__all__ = ["is_loopback", "serve"]

SERVICE = "serving.service:Scoring"


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except (OSError, ValueError):
            return False


def check(settings: ClmSettings, host: str) -> None:
    """Refuse, with one clear line, what would make the service fail or be unsafe."""
    from features.online import open_store
    from serving.middleware import api_token
    from serving.scoring import champion_versions, check_feature_meaning

    if api_token(settings.serving) is None and not is_loopback(host):
        raise ClmError(
            f"refusing to serve on {host} without an API token: set serving.api_token or "
            "CLM_API_TOKEN, or bind to 127.0.0.1"
        )
    meta = open_store(settings.serving.online_store).meta()
    _, versions = champion_versions(settings)
    check_feature_meaning(versions, settings, store=meta)


def check_port(host: str, port: int) -> None:
    """Refuse a ``host:port`` this machine cannot listen on (another server holds it, or no
    interface has the address), before the workers start and fail on it one by one."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ClmError(f"--host {host}: not an address of this machine ({exc.strerror})") from exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise ClmError(
                f"cannot serve on {host}:{port}: {exc.strerror} (another server may be on it: "
                "stop it, or choose another port with --port)"
            ) from exc


def serve(
    settings: ClmSettings, host: str | None, port: int | None, workers: int | None,
    config: Path | None,
) -> None:  # fmt: skip
    host = host or settings.serving.host
    port = port or settings.serving.port
    check(settings, host)
    check_port(host, port)
    env = dict(os.environ)
    if config is not None:
        env["CLM_CONFIG"] = str(config.resolve())
    if workers is not None:
        env["CLM_SERVING__WORKERS"] = str(workers)
    from serving.launch import metrics_dir

    command = [
        sys.executable,
        "-m",
        "serving.launch",
        str(metrics_dir(host, port)),
        "serve",
        SERVICE,
        "--host",
        host,
        "--port",
        str(port),
    ]
    count = workers or settings.serving.worker_count()
    print(
        f"serving on http://{host}:{port} with {count} worker{'s' if count > 1 else ''} "
        "(docs at /docs); Ctrl-C stops",
        file=sys.stderr,
    )
    os.execve(sys.executable, command, env)
