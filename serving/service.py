"""The BentoML scoring service: ``POST /score`` and ``GET /customers/{customer_id}``.

Started by ``clm serve`` (``bentoml serve serving.service:Scoring``). Each worker loads the
three ``@champion`` models and opens the online store once, at start; it refuses to start,
naming what is missing, when either is absent. Health (``/healthz``, ``/livez``,
``/readyz``), Prometheus ``/metrics`` and the OpenAPI page (``/docs``) are BentoML's.

Latency: after loading, every object alive is moved to the garbage collector's permanent
generation (``gc.freeze``) and the collection thresholds are raised, so a full collection
(measured at 100-200 ms with the models' Python objects in the heap) no longer stalls a
request; the boosters run on one thread each (see serving.scoring). Concurrent requests
are scored together in one pass (serving.batching), which spreads a pass's fixed cost.
A valid ``POST /score`` with a JSON body is answered from the guard middleware
(:func:`score_json`); everything else reaches the FastAPI routes below.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import bentoml
import orjson
import psutil  # type: ignore[import-untyped]
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from clm.errors import ClmError
from clm.serve_command import is_loopback
from clm.settings import ServingSettings, load_settings
from features.online import StoreMismatch, open_store
from serving.batching import MicroBatcher
from serving.contracts import CustomerView, ScoreRequest, ScoreResponse, ScoreResult
from serving.middleware import QUIET, REAL_PATH, GuardMiddleware, api_token, json_route, route
from serving.scoring import BadInput, Scorer, check_feature_meaning, load_champions, shown

__all__ = ["Scoring"]

log = logging.getLogger("clm.serving")
# What a request hands the batcher: customer ids, their feature rows, whether each is known.
RequestRows = tuple[list[str], list[Mapping[str, Any]], list[bool]]
PASS_REQUESTS = bentoml.metrics.Histogram(
    name="clm_scoring_pass_requests",
    documentation="Requests scored together in one pass (serving.batching).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SETTINGS = load_settings()
# Routes BentoML's OpenTelemetry middleware skips unless serving.tracing is on (patterns
# searched in the request URL).
UNTRACED = ("/score", "/customers/")
app = FastAPI(title="clm scoring", description="Churn, next stage, CLV and a retention decision.")


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming each bad field; the inputs are not echoed back (they may be NaN, which JSON
    cannot carry, or customer data, which does not belong in responses and logs)."""
    detail: list[dict[str, Any]] = []
    seen: dict[tuple[str, ...], dict[str, Any]] = {}
    for e in error.errors():
        loc = tuple(str(part) for part in e["loc"])
        # A feature value is one of several types: pydantic names each type that refused it
        # (total_spend.float, .constrained-int, .bool, ...); one error for the field says it.
        if loc and loc[-1] in UNION_MEMBERS:
            loc = loc[:-1]
            if loc in seen:
                continue
            msg = (
                "Input should be a finite number, a whole number, true or false, text of at "
                "most 200 characters, or null"
            )
            if "finite" in str(e["msg"]):
                msg = "Input should be a finite number (not NaN or an infinity)"
        else:
            msg = str(e["msg"])
        seen[loc] = {"loc": list(loc), "msg": msg, "type": str(e["type"])}
        detail.append(seen[loc])
    return JSONResponse(status_code=422, content={"detail": detail})


# How pydantic tags the alternatives of a union (serving.contracts.FeatureValue) in a loc.
UNION_MEMBERS = frozenset({"float", "constrained-int", "bool", "constrained-str", "int", "str"})


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong, naming the field.")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A value the service cannot score (named)."},
    401: {"model": ErrorBody, "description": "Missing or wrong Authorization: Bearer token."},
    413: {"model": ErrorBody, "description": "Request body over serving.max_body_bytes."},
}


def _kinds(meta: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The store's whole-number and flag columns (a SQLite store written before they were
    recorded has them in its layout)."""
    layout = meta.get("layout") or {}
    whole = meta.get("whole_numbers", layout.get("integers", []))
    return whole, meta.get("flags", layout.get("flags", []))


@bentoml.service(
    name="clm",
    workers=SETTINGS.serving.worker_count(),
    traffic={"timeout": 30},
    # Also where `bentoml serve serving.service:Scoring` binds (not BentoML's 0.0.0.0).
    http={"host": SETTINGS.serving.host, "port": SETTINGS.serving.port},
    # serving.middleware logs every request (id, route template, status, time) instead.
    logging={"access": {"enabled": False}},
    tracing={} if SETTINGS.serving.tracing else {"excluded_urls": list(UNTRACED)},
)
@bentoml.asgi_app(app, path="/")
class Scoring:
    """Real-time churn, next-stage and CLV scores with a retention decision per customer.

    The endpoints are FastAPI routes mounted on the BentoML service: FastAPI validates the
    body against serving.contracts (422 naming the field) and documents every response.
    """

    def __init__(self) -> None:
        settings = load_settings()
        _refuse_exposed_without_token(settings.serving)
        self.store = open_store(settings.serving.online_store)
        meta = self.store.meta()
        champions = load_champions(settings)
        # A store materialized anew while this runs is checked against them too (at lookup).
        self.store.expected_meaning = check_feature_meaning(
            champions.versions, settings, store=meta
        )
        self.scorer = Scorer(
            champions, settings, meta["new_customer"], present=meta["columns"],
            kinds=_kinds(meta),
        )  # fmt: skip
        self.max_customers = settings.serving.max_customers
        self.batcher: MicroBatcher[RequestRows, list[dict[str, Any]]] = MicroBatcher(
            self._score_many,
            lambda item: len(item[0]),
            settings.serving.max_batch_rows,
            observe=PASS_REQUESTS.observe,
        )
        self.scorer.freeze()
        gc.set_threshold(50_000, 50, 1_000)
        log.setLevel(logging.INFO)
        if settings.serving.worker_count() > 1:
            _share_connections()
        global _service
        _service = self

    async def lookup(self, customer_ids: list[str]) -> dict[str, Mapping[str, Any]]:
        """Stored features: from a local store on the event loop (microseconds), from a
        networked one on a thread, so that a slow server never stalls the worker."""
        try:
            if not self.store.remote:
                return self.store.get_many(customer_ids)
            return await anyio.to_thread.run_sync(self.store.get_many, customer_ids)
        except ClmError as error:  # the store cannot be read now: the request is not at fault
            raise _store_unavailable(error) from None

    async def score(self, body: ScoreRequest) -> bytes:
        """The JSON of the ScoreResponse (raises HTTPException 400 naming a bad value)."""
        customers = body.customers
        if len(customers) > self.max_customers:
            raise HTTPException(
                400, f"customers: {len(customers)} given, at most {self.max_customers} per request"
            )
        requests = [(c.customer_id, c.features) for c in customers]
        stored = await self.lookup([cid for cid, _ in requests])
        try:
            rows, known = self.scorer.rows(requests, stored)
        except BadInput as error:
            raise HTTPException(400, str(error)) from None
        results = await self.batcher.submit(([cid for cid, _ in requests], rows, known))
        # The results are built to serving.contracts.ScoreResult already (a test checks
        # them against the schema): written straight to JSON, not validated a second time.
        return orjson.dumps({"results": results})

    def _score_many(self, items: Sequence[RequestRows]) -> list[list[dict[str, Any]]]:
        """Requests merged by the batcher (serving.batching): one scoring pass, then each
        request's slice of the results."""
        if len(items) == 1:
            return [self.scorer.score(*items[0])]
        ids = [cid for item in items for cid in item[0]]
        rows = [row for item in items for row in item[1]]
        known = [flag for item in items for flag in item[2]]
        results = self.scorer.score(ids, rows, known)
        sliced, start = [], 0
        for item in items:
            sliced.append(results[start : start + len(item[0])])
            start += len(item[0])
        return sliced

    async def customer(self, customer_id: str) -> CustomerView:
        stored = await self.lookup([customer_id])
        if customer_id not in stored:
            raise HTTPException(404, f"customer {_shown(customer_id)} is not in the online store")
        result = (await self.batcher.submit(([customer_id], [stored[customer_id]], [True])))[0]
        # The store's cutoff now: a materialize may have replaced it since the start.
        store = self.store
        try:
            meta = await anyio.to_thread.run_sync(store.meta) if store.remote else store.meta()
        except (ClmError, sqlite3.DatabaseError) as error:
            raise _store_unavailable(error) from None
        return CustomerView(
            customer_id=customer_id,
            as_of=meta.get("as_of"),
            features={name: shown(value) for name, value in stored[customer_id].items()},
            score=ScoreResult.model_validate(result),
        )


def _store_unavailable(error: Exception) -> HTTPException:
    """A 503 for a store that cannot be read now; what and where go to the log only."""
    log.warning("online store unavailable: %s", " ".join(str(error).split()))
    if isinstance(error, StoreMismatch):  # lasts until a restart: no "try again shortly"
        return HTTPException(
            503,
            "the online store was materialized under other feature settings than the loaded "
            "models were trained with; the service needs a restart (see its log)",
        )
    return HTTPException(503, "the online store cannot be read now; try again shortly")


def _template_traffic_metrics() -> None:
    """BentoML's traffic metrics name each request by its raw path: ``/customers/{id}``
    would put every customer id looked up on the open /metrics page, and a new series per
    id (any caller could grow it without bound). Its middleware, the outermost, is
    replaced by one that records the route template instead (serving.middleware.route:
    ``/customers/{customer_id}``, ``(other)``); GuardMiddleware restores the path."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "templated", False):
        return

    class TemplatedTrafficMetrics(base):  # type: ignore[misc, valid-type]
        templated = True

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            path = scope.get("path", "")
            if scope["type"] == "http" and path not in QUIET and (shown := route(path)) != path:
                scope = {**scope, "path": shown, REAL_PATH: path}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = TemplatedTrafficMetrics  # type: ignore[misc]


_template_traffic_metrics()


def _refuse_exposed_without_token(settings: ServingSettings) -> None:
    """However the service was started (``clm serve`` checks before), it does not answer
    on an address other machines reach unless an API token is configured."""
    if api_token(settings) is not None:
        return
    exposed = sorted(
        {
            c.laddr.ip
            for c in psutil.Process().net_connections("inet")
            if c.status == psutil.CONN_LISTEN and not is_loopback(c.laddr.ip)
        }
    )
    if exposed:
        raise ClmError(
            f"refusing to serve on {exposed[0]} without an API token: set serving.api_token "
            "or CLM_API_TOKEN, or bind to 127.0.0.1"
        )


def _share_connections() -> None:
    """Make this worker take one connection per turn of its event loop, then yield its core.

    The workers share one listening socket, and asyncio's selector loop accepts every
    connection pending on it at once (up to the backlog) when it wakes. A client that opens
    its connections in a burst (a connection pool, wrk) then had them all land on whichever
    worker ran first, for as long as they stayed open, and the other worker idled. Taking one
    connection at a time is not enough on its own: the woken workers wait for the same core,
    and the first one turns its loop faster than the second is scheduled. After each accept
    the worker therefore yields its core (``sched_yield``), which in practice lets the other
    woken worker take the next one (measured: 16 of 16 bursts of 8 shared, against 3 of 8
    without the yield and 2 of 16 with neither; fewer when other work holds both cores, 2 of
    5 with the test suite running: tests/serving/test_service.py pins the one accept per turn
    and checks that bursts reach both workers). A busy worker turns its loop less often and
    takes fewer.
    Called at the service's start, which runs on the loop before uvicorn serves the socket
    (BentoML creates the service in the ASGI lifespan, which uvicorn runs first); a loop
    without this method as Python 3.11-3.13 define it (uvloop) keeps its own way."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    accept: Callable[..., Any] | None = getattr(loop, "_accept_connection", None)
    if getattr(accept, "shares_connections", False):  # done already on this loop
        return
    try:
        names = list(inspect.signature(accept).parameters)[:5] if accept else []
    except (TypeError, ValueError):
        names = []
    if accept is None or names != ["protocol_factory", "sock", "sslcontext", "server", "backlog"]:
        log.warning("this event loop's accept is not asyncio's: workers accept as it does")
        return

    def one(protocol_factory: Any, sock: Any, sslcontext: Any = None, server: Any = None,
            backlog: int = 100, *args: Any) -> Any:  # fmt: skip
        accepted = accept(protocol_factory, sock, sslcontext, server, 1, *args)
        os.sched_yield()
        return accepted

    one.shares_connections = True  # type: ignore[attr-defined]
    loop._accept_connection = one  # type: ignore[attr-defined]


# The routes are plain coroutines on the service of this worker, not FastAPI class views:
# those resolve ``self`` through a synchronous dependency, and FastAPI runs synchronous
# dependencies and endpoints on a thread pool, two thread hand-offs per request. The scoring
# itself is CPU work with one worker per core, so it runs on the worker's event loop.
_service: Scoring | None = None


def _current() -> Scoring:
    if _service is None:
        raise HTTPException(503, "the service is still loading its models")
    return _service


@app.post(
    "/score",
    response_model=ScoreResponse,
    responses={**ERRORS, 415: {"model": ErrorBody, "description": "A body not in JSON."}},
)
async def score(body: ScoreRequest) -> Response:
    """Score customers given by id (features from the online store) or with features."""
    return Response(await _current().score(body), media_type="application/json")


@app.get(
    "/customers/{customer_id:path}",  # an id may hold a '/'
    response_model=CustomerView,
    responses={**ERRORS, 404: {"model": ErrorBody, "description": "Unknown customer id."}},
)
async def customer(customer_id: str) -> CustomerView:
    """The stored features of one customer and their score now (surrounding spaces in the
    id are trimmed, as in ``POST /score`` and the data)."""
    trimmed = customer_id.strip(" ")
    if not trimmed:
        raise HTTPException(404, f"customer id {_shown(customer_id)} is empty once trimmed")
    return await _current().customer(trimmed)


def _shown(customer_id: str, most: int = 64) -> str:
    """An id as a message quotes it: a long one (a URL of kilobytes) by its start and length."""
    if len(customer_id) <= most:
        return repr(customer_id)
    return f"{customer_id[:most]!r}... ({len(customer_id):,} characters)"


async def score_json(body: bytes) -> bytes | None:
    """``POST /score`` served from the ASGI middleware (serving.middleware.json_route): the
    answer to a JSON body that is a valid request and scores, parsed and validated in one
    step by pydantic; None hands the request on to the FastAPI route. The route costs about
    0.4 ms more a request (BentoML's and FastAPI's routing, middleware and dependency
    resolution). Anything that fails here goes on to it, so bad input gets exactly the
    route's answer (422 naming the field, 400, 503), and the OpenAPI page documents what is
    served. (Answers from here skip the middleware BentoML puts after the service's own:
    its request context, which the routes do not use, and BentoML's CORS, which this
    service does not turn on: GuardMiddleware answers for CORS.)"""
    service = _service
    if service is None:
        return None
    try:
        return await service.score(ScoreRequest.model_validate_json(body))
    except (ValidationError, HTTPException):
        return None
    except Exception as error:  # the route fails the same way: answered and logged as a 500
        log.warning("scoring failed (%s); the request goes on to the route", type(error).__name__)
        return None


Scoring.add_asgi_middleware(  # type: ignore[attr-defined]  # a Service after the decorator
    GuardMiddleware,
    token=api_token(SETTINGS.serving),
    max_body_bytes=SETTINGS.serving.max_body_bytes,
    fast={("POST", "/score"): json_route(score_json)},
    cors_origins=SETTINGS.serving.cors_origins,
)
