"""Micro-batching: concurrent scoring requests of one worker scored in one pass.

A scoring pass has a fixed cost that does not depend on its rows: four XGBoost calls, the
contributions, the decision, each a few hundred numpy operations. Under load, requests
queue up on the worker while a pass runs; scored one by one, each pays that fixed cost
again. Here they are merged, as BentoML's adaptive batching, Triton's dynamic batching and
Ray Serve's ``@serve.batch`` do for their models: a request hands its valid rows to
:meth:`MicroBatcher.submit` and waits; the pass runs once no more requests arrive in one
turn of the event loop (or ``max_rows`` rows are waiting) and each request gets its own
slice of the results.

* No timer: a lone request is scored at once (two turns of the event loop, microseconds),
  so batching costs nothing at low load and adds no latency target to tune.
* A request is never split; requests are merged while the merged rows stay within
  ``max_rows``, and a larger backlog is scored in several passes.
* A pass that fails is retried request by request, so one request's failure never fails
  the requests merged with it. A request whose caller has gone (cancelled) is not scored.
* Scoring is per row: a customer's scores do not depend on the requests merged with it
  (a test checks the results equal those of requests sent one at a time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")

# Turns of the event loop a pass waits for more requests while they keep arriving. Under
# load, a request reaches submit a turn or two after its bytes were read (BentoML's timeout
# middleware runs the app in a new task); more turns would only delay a pass.
MAX_TURNS = 8


class MicroBatcher(Generic[Item, Result]):
    """Merges concurrent :meth:`submit` calls into calls of ``score``.

    ``score(items)`` returns one result per item, in order; ``rows(item)`` is an item's
    row count, for ``max_rows``; ``observe(requests)``, if given, is told the number of
    requests of every pass that succeeded (the service feeds a Prometheus histogram).
    """

    def __init__(
        self,
        score: Callable[[Sequence[Item]], Sequence[Result]],
        rows: Callable[[Item], int],
        max_rows: int,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.score_many, self.rows, self.max_rows = score, rows, max_rows
        self.observe = observe
        self.pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self.scheduled = False

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self.pending.append((item, future))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._turn, loop, 0, 0)
        return await future

    def _turn(self, loop: asyncio.AbstractEventLoop, turns: int, seen: int) -> None:
        """Wait while requests keep arriving (and the backlog is below max_rows), then score."""
        waiting = len(self.pending)
        if waiting > seen and turns < MAX_TURNS and self._backlog() < self.max_rows:
            loop.call_soon(self._turn, loop, turns + 1, waiting)
            return
        self.scheduled = False
        pending, self.pending = self.pending, []
        live = [(item, future) for item, future in pending if not future.done()]
        for batch in self._batches(live):
            self._run(batch)

    def _backlog(self) -> int:
        return sum(self.rows(item) for item, _ in self.pending)

    def _batches(
        self, live: list[tuple[Item, asyncio.Future[Result]]]
    ) -> list[list[tuple[Item, asyncio.Future[Result]]]]:
        batches: list[list[tuple[Item, asyncio.Future[Result]]]] = []
        size = 0
        for entry in live:
            rows = self.rows(entry[0])
            if not batches or size + rows > self.max_rows:
                batches.append([])
                size = 0
            batches[-1].append(entry)
            size += rows
        return batches

    def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = self.score_many([item for item, _ in batch])
        except Exception as error:
            if len(batch) > 1:  # find the request that fails; score the others
                for entry in batch:
                    self._run([entry])
                return
            _settle(batch[0][1], error=error)
            return
        if self.observe is not None:
            self.observe(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[Result], result: Result | None = None, error: Exception | None = None
) -> None:
    if future.done():  # the caller went away while the pass ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
