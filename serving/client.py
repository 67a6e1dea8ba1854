"""A Python client of the scoring service, and a local service to try it against.

>>> with local_service() as client:            # clm serve on a free loopback port
...     client.score(["C000007", {"customer_id": "new-1", "features": {"visit_events_7d": 3}}])

``ScoringClient`` is what an application in Python calls: one method per route, the bearer
token sent when given, and a :class:`ServiceError` carrying the status and the service's
``detail`` for any non-2xx answer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

__all__ = [
    "ScoringClient",
    "ServiceError",
    "connection_owners",
    "free_port",
    "local_service",
    "wait_for_workers",
]


class ServiceError(RuntimeError):
    """A non-2xx answer: ``status`` and the service's ``detail``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class ScoringClient:
    """Calls ``POST /score`` and ``GET /customers/{id}`` of a running service."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ready(self) -> bool:
        """True once the service answers ``/readyz`` (models loaded, store open)."""
        try:
            return self._http.get("/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _json(self, response: httpx.Response) -> Any:
        if response.is_success:
            return response.json()
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
        raise ServiceError(response.status_code, detail)

    def score(self, customers: Iterable[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Score customers given by id or as ``{"customer_id": ..., "features": {...}}``;
        one result per customer, in order."""
        if isinstance(customers, str | Mapping):
            raise TypeError("customers must be a list of ids or of {'customer_id': ...} objects")
        body = [{"customer_id": c} if isinstance(c, str) else dict(c) for c in customers]
        results: list[dict[str, Any]] = self._json(
            self._http.post("/score", json={"customers": body})
        )["results"]
        return results

    def customer(self, customer_id: str) -> dict[str, Any]:
        """The stored features of one customer and their score now."""
        path = f"/customers/{quote(customer_id, safe='')}"
        view: dict[str, Any] = self._json(self._http.get(path))
        return view


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_owners(port: int, clients: Iterable[socket.socket]) -> Counter[int]:
    """How many of ``clients``' connections to ``port`` each process of this machine holds:
    which worker of a local service took each connection."""
    import psutil  # type: ignore[import-untyped]

    ours = {c.getsockname()[1] for c in clients}
    held: Counter[int] = Counter()
    for c in psutil.net_connections("tcp"):
        if (
            c.pid is not None
            and c.laddr
            and c.laddr.port == port
            and c.raddr
            and c.raddr.port in ours
        ):
            held[c.pid] += 1
    return held


def wait_for_workers(url: str, workers: int, timeout: float = 120.0) -> None:
    """Return once ``workers`` processes have each answered a connection to the local service
    at ``url``: a service is ready as soon as its first worker is, while the others may still
    be loading their models."""
    port = urlsplit(url).port or 80
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: {len(seen)} of {workers} workers answered in {timeout} s")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            c.sendall(b"GET /livez HTTP/1.1\r\nHost: clm\r\n\r\n")
            c.recv(4096)  # answered: accepted by a worker that is serving
            seen |= set(connection_owners(port, [c]))
        time.sleep(0.05)


@contextmanager
def local_service(
    *,
    port: int | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 120.0,
) -> Iterator[ScoringClient]:
    """Run ``clm serve`` on 127.0.0.1 (a free port by default) until the block ends.

    ``env`` adds variables (``CLM_TRAINING__TRACKING_URI``, ``CLM_SERVING__ONLINE_STORE``,
    ...) to this process's environment; ``token`` becomes ``CLM_API_TOKEN`` and the client's
    bearer token. The service's output goes to ``log`` (by default a temporary file, removed
    at the end); its last lines are in the error when the service exits or is not ready
    within ``timeout`` seconds.
    """
    with tempfile.TemporaryDirectory(prefix="clm-serve-") as scratch:
        yield from _serve(port, token, env, log or Path(scratch) / "serve.log", timeout)


def _serve(
    port: int | None,
    token: str | None,
    env: Mapping[str, str] | None,
    log: Path,
    timeout: float,
) -> Iterator[ScoringClient]:
    port = port or free_port()
    variables = {**os.environ, **(env or {})}
    if token:
        variables["CLM_API_TOKEN"] = token
    command = [sys.executable, "-m", "clm", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=variables, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = ScoringClient(f"http://127.0.0.1:{port}", token=token)
    try:
        deadline = time.monotonic() + timeout
        while not client.ready():
            if process.poll() is not None:
                raise RuntimeError(f"clm serve exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"clm serve was not ready in {timeout:.0f} s ({log})")
            time.sleep(0.3)
        yield client
    finally:
        client.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
