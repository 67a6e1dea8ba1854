"""What guards every request before it reaches the service: the API token and body size.

* With a token configured (``serving.api_token`` or ``CLM_API_TOKEN``), ``/score`` and
  ``/customers/...`` need ``Authorization: Bearer <token>``; anything else gets 401. The
  comparison is constant-time. Health, metrics and the docs stay open.
* A body over ``serving.max_body_bytes`` gets 413, whether it declares its length or streams,
  and so does one sent with ``Content-Encoding: gzip`` (or ``deflate``) that inflates past it;
  such a body reaches the service decompressed.
* Every request is logged once, when its response starts: a request id (the caller's
  ``X-Request-ID`` if it is a plain token, else a new one; echoed in the response header),
  method, route, status and time. The route names no customer: ``/customers/{customer_id}``
  is logged as that template, a path the service does not have as ``(other)``, and bodies,
  headers and tokens never are; health and metrics probes are not logged. (This replaces
  BentoML's access log, which logs the raw path.)
* With ``serving.cors_origins``, browser pages of those origins may call the service: their
  preflight requests are answered before the token check (a browser sends them without
  it) and answers carry the CORS headers (Starlette's CORSMiddleware, in front of the rest).
* A route can be served here, after these checks, instead of by the app behind
  (``fast``; :func:`json_route`): the service answers valid ``POST /score`` requests so.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from clm.settings import ServingSettings

__all__ = [
    "PROTECTED",
    "QUIET",
    "REAL_PATH",
    "FastRoute",
    "GuardMiddleware",
    "api_token",
    "json_route",
    "route",
]

PROTECTED = ("/score", "/customers")
log = logging.getLogger("clm.serving")
REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


# Paths logged as they are; a customer's as its template; any other as "(other)", since a
# path a caller made up may carry anything. Probes are not logged at all.
ROUTES = frozenset({"/score", "/docs", "/docs.json", "/openapi.json", "/"})
QUIET = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})


# Where a middleware in front of this one that shows the route (``route``) in place of the
# path to what it records keeps the real path; GuardMiddleware puts it back.
REAL_PATH = "clm.path"


def route(path: str) -> str:
    """The path as logged (see ROUTES)."""
    if path in ROUTES:
        return path
    if path.startswith("/customers/") and len(path) > len("/customers/"):
        return "/customers/{customer_id}"  # an id may hold a '/' (the route takes a path)
    return "(other)"


def request_id(headers: dict[bytes, bytes]) -> bytes:
    given = headers.get(b"x-request-id", b"")
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16].encode()


def api_token(settings: ServingSettings) -> str | None:
    return settings.api_token or os.environ.get("CLM_API_TOKEN") or None


class BodyTooLarge(Exception):
    pass


# A route served here instead of by the app behind (see GuardMiddleware): called with the
# request's scope, receive and send and the app itself, to hand the request on to.
FastRoute = Callable[[Any, Any, Any, Any], Awaitable[None]]


def json_route(answer: Callable[[bytes], Awaitable[bytes | None]]) -> FastRoute:
    """A :data:`FastRoute` for JSON bodies: ``answer(body)`` gives the JSON of a 200 answer,
    or None to hand the request on to the app behind, which then reads the same body. A
    body of another JSON type (``application/vnd.x+json``) is handed on unread (FastAPI
    reads it as JSON); a body of another type or of none gets a 415 (FastAPI would answer
    that the body is no object, which is what curl's default form type got)."""

    async def route(scope: Any, receive: Any, send: Any, app: Any) -> None:
        kind = _content_type(scope)
        if kind != b"application/json":
            if kind is not None and _json_like(kind):
                await app(scope, receive, send)
            else:
                shown = "missing" if kind is None else kind.decode("latin-1")[:100]
                await _reply(
                    send, 415, f"Content-Type {shown}: expected application/json (a JSON body)"
                )
            return
        body = await _body(receive)
        answered = await answer(body)
        if answered is None:
            if (unreadable := _unreadable_text(body)) is not None:
                await _reply(send, 400, unreadable)  # FastAPI names neither byte nor place
                return
            await app(scope, _replay(body, receive), send)
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(answered)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answered})

    return route


def _unreadable_text(body: bytes) -> str | None:
    """What is wrong with a body that is no text in its JSON encoding (UTF-8, or UTF-16/32
    as json.loads detects them), naming the first bad byte; None when it reads."""
    encoding = json.detect_encoding(body)
    try:
        body.decode(encoding)
    except UnicodeDecodeError as error:
        bad = body[error.start : error.start + 1].hex()
        return (
            f"body: not {encoding.upper()} text at byte {error.start} (0x{bad}: "
            f"{error.reason}); JSON is sent as UTF-8 (an export in Latin-1 or Windows-1252 "
            "writes é as one byte)"
        )
    return None


def _inflate(encoding: bytes, body: bytes, limit: int) -> bytes | tuple[int, str]:
    """A ``Content-Encoding: gzip`` or ``deflate`` body decompressed, or the status and
    message of the answer: 413 when it inflates past ``limit`` bytes (a zip bomb stops
    there), 400 when it is not such data, 415 for another encoding."""
    shown = encoding.decode("latin-1")[:40]
    if encoding not in (b"gzip", b"x-gzip", b"deflate"):
        return 415, f"Content-Encoding {shown}: expected gzip, deflate or none"
    # deflate: zlib data (RFC 9110), or raw deflate as some clients send it.
    tries = [zlib.MAX_WBITS, -zlib.MAX_WBITS] if encoding == b"deflate" else [16 + zlib.MAX_WBITS]
    problem = ""
    for wbits in tries:
        inflated = _members(body, wbits, limit)
        if isinstance(inflated, bytes):
            return inflated
        if inflated[0] == 413:
            return inflated
        problem = problem or inflated[1]
    return 400, problem


def _members(body: bytes, wbits: int, limit: int) -> bytes | tuple[int, str]:
    """``body`` inflated member after member (gzip allows several), at most ``limit`` bytes."""
    parts: list[bytes] = []
    size, rest = 0, body
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as error:
            return 400, f"body: not compressed data as its Content-Encoding says ({error})"
        size += len(part)
        parts.append(part)
        if size > limit:
            return 413, f"request body over {limit} bytes once decompressed"
        if not inflater.eof:
            return 400, "body: compressed data cut short"
        rest = inflater.unused_data
        if not rest or wbits < 16:  # only gzip has members; deflate ends at its end
            break
    if rest:
        return 400, "body: compressed data followed by other bytes"
    return b"".join(parts)


def _plain_headers(scope: Any, length: int) -> list[tuple[bytes, bytes]]:
    """The request's headers for its decompressed body: no Content-Encoding, its length."""
    kept = [
        (name, value)
        for name, value in scope.get("headers") or ()
        if name not in (b"content-encoding", b"content-length")
    ]
    return [*kept, (b"content-length", str(length).encode())]


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _content_type(scope: Any) -> bytes | None:
    """The request's media type, lower case without parameters; None when not given."""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower()
    return None


def _json_like(kind: bytes) -> bool:
    """A JSON media type as FastAPI reads one: application/json or application/*+json."""
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


def _replay(body: bytes, receive: Any) -> Any:
    """A receive that gives ``body`` whole once, then what ``receive`` gives (a disconnect)."""
    given = False

    async def replayed() -> Any:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _reply(send: Any, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": message}).encode()  # as FastAPI's errors
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Pure ASGI middleware (no per-request objects beyond what it checks).

    ``fast`` maps (method, path) to a :data:`FastRoute` that serves that route after the
    checks here, in place of the app behind (which it may hand the request on to).
    """

    def __init__(
        self,
        app: Any,
        token: str | None,
        max_body_bytes: int,
        fast: Mapping[tuple[str, str], FastRoute] | None = None,
        cors_origins: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.expected = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.fast = dict(fast or {})
        # After the log, before the token check (a browser's preflight carries no token).
        self.checked: Callable[[Any, Any, Any], Awaitable[None]] = self._checked
        if cors_origins:
            from starlette.middleware.cors import CORSMiddleware

            self.checked = CORSMiddleware(
                self._checked,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
                max_age=600,
            )

    async def _checked(self, scope: Any, receive: Any, send: Any) -> None:
        await self._guarded(scope, dict(scope.get("headers") or []), receive, send)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if REAL_PATH in scope:
            scope = {**scope, "path": scope[REAL_PATH]}
        if scope.get("path") in QUIET:
            await self.checked(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        rid = request_id(headers)
        status = 0

        async def logged(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", rid)],
                }
                log.info(
                    "request %s %s %s %d in %.1f ms", rid.decode(), scope.get("method", ""),
                    route(scope.get("path", "")), status, (time.perf_counter() - started) * 1000,
                )  # fmt: skip
            await send(message)

        await self.checked(scope, receive, logged)

    async def _guarded(
        self, scope: Any, headers: dict[bytes, bytes], receive: Any, send: Any
    ) -> None:
        path: str = scope.get("path", "")
        if self.expected is not None and path.startswith(PROTECTED):
            # The scheme is case-insensitive (RFC 9110 11.1); the token is compared as given.
            scheme, _, given = headers.get(b"authorization", b"").strip().partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                given.strip(b" "), self.expected
            ):
                await _reply(
                    send,
                    401,
                    "missing or wrong Authorization: Bearer token",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        received = 0
        limit = self.max_body_bytes
        started = replied = False

        async def counted() -> Any:
            nonlocal received, started, replied
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answered here: the app reading the body may turn the error into a 400.
                    if not started:
                        started = replied = True
                        await _reply(send, 413, f"request body over {limit} bytes")
                    raise BodyTooLarge
            return message

        async def tracked(message: Any) -> None:
            nonlocal started
            if replied:  # the 413 was the answer; what the app sends after it is dropped
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        fast = self.fast.get((scope.get("method", ""), path))
        reader: Any = counted
        try:
            encoding = headers.get(b"content-encoding", b"").strip().lower()
            if encoding not in (b"", b"identity"):
                inflated = _inflate(encoding, await _body(counted), limit)
                if isinstance(inflated, tuple):
                    await _reply(send, *inflated)
                    return
                scope = {**scope, "headers": _plain_headers(scope, len(inflated))}
                reader = _replay(inflated, receive)
            if fast is not None:
                await fast(scope, reader, tracked, self.app)
            else:
                await self.app(scope, reader, tracked)
        except ClientGone:
            return
        except BodyTooLarge:
            if not started:
                await _reply(send, 413, f"request body over {limit} bytes")
