"""The guard middleware in process (plain ASGI calls): a fast route is served after the
token and size checks, and what it hands on reaches the app behind with the same body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from serving.middleware import GuardMiddleware, json_route

TOKEN = "secret-token"


class App:
    """The app behind: answers 200 with the body it read (what FastAPI would parse), and
    notes what a further receive gives (as Starlette's disconnect watch would ask)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.after: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        self.after.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


def call(
    middleware: GuardMiddleware,
    chunks: list[bytes],
    *,
    path: str = "/score",
    method: str = "POST",
    content_type: bytes | None = b"application/json",
    token: str | None = TOKEN,
    authorization: str | None = None,
) -> tuple[int, bytes, dict[bytes, bytes]]:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    if authorization is None and token is not None:
        authorization = f"Bearer {token}"
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, dict(sent[0]["headers"])


def guard(app: App, answered: list[bytes], limit: int = 1000) -> GuardMiddleware:
    async def answer(body: bytes) -> bytes | None:
        answered.append(body)
        request = json.loads(body)
        return None if "bad" in request else json.dumps({"echo": request}).encode()

    return GuardMiddleware(
        app, token=TOKEN, max_body_bytes=limit, fast={("POST", "/score"): json_route(answer)}
    )


def test_a_fast_route_answers_json_bodies_itself_and_hands_on_the_rest_with_their_body() -> None:
    app, answered = App(), []
    middleware = guard(app, answered)
    status, body, headers = call(middleware, [b'{"customers":', b" [1, 2]}"])
    assert (status, json.loads(body)) == (200, {"echo": {"customers": [1, 2]}})
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert b"x-request-id" in headers  # logged and echoed like any request
    assert answered == [b'{"customers": [1, 2]}'] and app.bodies == []
    # The route declines: the app behind reads the very same body, whole.
    status, body, _ = call(middleware, [b'{"bad": ', b"true}"])
    assert (status, body) == (200, b"app")
    assert app.bodies == [b'{"bad": true}']
    assert app.after == ["http.disconnect"]  # then the connection's own messages, not the body
    # Another JSON type (FastAPI reads it as JSON): handed on unread.
    status, body, _ = call(middleware, [b'{"a": 1}'], content_type=b"application/vnd.clm+json")
    assert (status, body, app.bodies[-1]) == (200, b"app", b'{"a": 1}')
    # Not JSON (curl's default form type, text) or no type: 415, the app never called.
    for kind in (b"application/x-www-form-urlencoded", b"Text/Plain; charset=utf-8", None):
        status, body, _ = call(middleware, [b'{"a": 1}'], content_type=kind)
        shown = kind.split(b";")[0].lower().decode() if kind else "missing"
        assert (status, json.loads(body)) == (
            415, {"detail": f"Content-Type {shown}: expected application/json (a JSON body)"}
        )  # fmt: skip
    assert len(app.bodies) == 2 and len(answered) == 2
    # With parameters and in any case, application/json is JSON.
    status, body, _ = call(middleware, [b"[3]"], content_type=b"Application/JSON; charset=utf-8")
    assert (status, json.loads(body)) == (200, {"echo": [3]})
    # Other methods and paths go to the app.
    assert call(middleware, [b"[4]"], method="PUT")[1] == b"app"
    assert call(middleware, [b"[5]"], path="/customers/a")[1] == b"app"
    assert len(answered) == 3


def test_the_bearer_scheme_is_read_in_any_case_and_the_token_exactly() -> None:
    middleware = guard(App(), [], limit=20)
    # The scheme in any case; the token exactly.
    answers = {
        f"bearer {TOKEN}": 200, f"BEARER  {TOKEN}": 200, f"Bearer {TOKEN.upper()}": 401,
        TOKEN: 401, f"Basic {TOKEN}": 401, f"Bearer {TOKEN}x": 401, "Bearer": 401,
    }  # fmt: skip
    for header, expected in answers.items():
        assert call(middleware, [b"[1]"], authorization=header)[0] == expected, header


def test_a_fast_route_is_behind_the_token_and_the_body_limit() -> None:
    app, answered = App(), []
    middleware = guard(app, answered, limit=20)
    status, body, headers = call(middleware, [b"[1]"], token=None)
    assert status == 401 and headers[b"www-authenticate"] == b"Bearer"
    assert json.loads(body) == {"detail": "missing or wrong Authorization: Bearer token"}
    status, _, _ = call(middleware, [b"[1]"], token="wrong")
    assert status == 401
    status, body, _ = call(middleware, [b"[" + b"1, " * 5, b"2, " * 5 + b"3]"])
    assert status == 413 and b"over 20 bytes" in body
    assert answered == [] and app.bodies == []
    assert call(middleware, [b"[1, 2]"])[0] == 200
    assert answered == [b"[1, 2]"]


def test_a_client_gone_before_its_body_gets_no_answer_and_no_call() -> None:
    app, answered = App(), []
    middleware = guard(app, answered)
    scope = {"type": "http", "method": "POST", "path": "/score", "headers": [
        (b"content-type", b"application/json"), (b"authorization", f"Bearer {TOKEN}".encode())]}  # fmt: skip
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    assert sent == [] and answered == [] and app.bodies == []
