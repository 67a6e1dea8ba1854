"""Micro-batching of concurrent requests (serving.batching), on a real asyncio event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from serving.batching import MicroBatcher

Item = tuple[str, int]  # (name, rows)


class Recorder:
    """A scoring function that records its passes; items named "bad" make a pass fail."""

    def __init__(self) -> None:
        self.passes: list[list[str]] = []
        self.observed: list[int] = []

    def __call__(self, items: Sequence[Item]) -> list[str]:
        names = [name for name, _ in items]
        self.passes.append(names)
        if "bad" in names:
            raise ValueError("bad item")
        return [f"scored {name}" for name in names]

    def batcher(self, max_rows: int = 100) -> MicroBatcher[Item, str]:
        return MicroBatcher(self, lambda item: item[1], max_rows, observe=self.observed.append)


async def _submit_all(batcher: MicroBatcher[Item, str], items: list[Item]) -> list[object]:
    async def one(item: Item) -> object:
        await asyncio.sleep(0)  # arrive like requests: in the same turn of the loop
        return await batcher.submit(item)

    return await asyncio.gather(*(one(item) for item in items), return_exceptions=True)


def test_concurrent_requests_are_scored_in_one_pass_each_getting_its_own_result() -> None:
    recorder = Recorder()
    items = [(f"r{i}", 1) for i in range(20)]
    results = asyncio.run(_submit_all(recorder.batcher(), items))
    assert results == [f"scored r{i}" for i in range(20)]
    assert recorder.passes == [[f"r{i}" for i in range(20)]]
    assert recorder.observed == [20]


def test_requests_arriving_a_few_turns_apart_still_share_a_pass() -> None:
    recorder = Recorder()

    async def late(item: Item, turns: int) -> str:
        for _ in range(turns):  # e.g. a middleware that runs the app in a new task
            await asyncio.sleep(0)
        return await batcher.submit(item)

    async def main() -> list[str]:
        return await asyncio.gather(*(late((f"r{t}", 1), t) for t in range(4)))

    batcher = recorder.batcher()
    assert asyncio.run(main()) == [f"scored r{t}" for t in range(4)]
    assert recorder.passes == [["r0", "r1", "r2", "r3"]]


def test_requests_one_after_another_are_scored_alone() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()

    async def main() -> list[str]:
        return [await batcher.submit((f"r{i}", 5)) for i in range(3)]

    assert asyncio.run(main()) == ["scored r0", "scored r1", "scored r2"]
    assert recorder.passes == [["r0"], ["r1"], ["r2"]]
    assert recorder.observed == [1, 1, 1]


def test_passes_stay_within_max_rows_and_never_split_a_request() -> None:
    recorder = Recorder()
    items = [("a", 40), ("b", 40), ("c", 40), ("big", 150), ("d", 10)]
    results = asyncio.run(_submit_all(recorder.batcher(max_rows=100), items))
    assert results == [f"scored {name}" for name, _ in items]
    assert recorder.passes == [["a", "b"], ["c"], ["big"], ["d"]]


def test_a_failing_request_fails_alone() -> None:
    recorder = Recorder()
    items = [("r0", 1), ("bad", 1), ("r2", 1)]
    results = asyncio.run(_submit_all(recorder.batcher(), items))
    assert results[0] == "scored r0" and results[2] == "scored r2"
    assert isinstance(results[1], ValueError)
    # The merged pass failed, then each request was scored on its own.
    assert recorder.passes == [["r0", "bad", "r2"], ["r0"], ["bad"], ["r2"]]
    assert recorder.observed == [1, 1]  # the two passes that succeeded


def test_a_request_whose_caller_went_away_is_not_scored() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()

    async def main() -> str:
        gone = asyncio.ensure_future(batcher.submit(("gone", 1)))
        kept = asyncio.ensure_future(batcher.submit(("kept", 1)))
        await asyncio.sleep(0)  # both are waiting
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(main()) == "scored kept"
    assert recorder.passes == [["kept"]]
