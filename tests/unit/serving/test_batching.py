"""Adaptive batching: merge, split, bounds, overload, release pinning, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from headrace.errors import ConfigError, ModelError
from headrace.inference.service import InferenceService
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.base import ModelOutput
from headrace.runtimes.testing import FailingModel
from headrace.serving.batching import AdaptiveBatcher, BatchMode, BatchReport
from headrace.serving.errors import OverloadedError
from headrace.types import Matrix

SCHEMA = Schema(fields=[Field(name="x", type="float"), Field(name="y", type="float")])


class EchoModel:
    """Predicts x + offset; records every batch size; optionally slow."""

    flavor = "testing"

    def __init__(self, offset: float = 0.0, delay_s: float = 0.0) -> None:
        self.offset = offset
        self.delay_s = delay_s
        self.batches: list[int] = []

    def predict(self, matrix: Matrix) -> ModelOutput:
        self.batches.append(len(matrix))
        if self.delay_s:
            time.sleep(self.delay_s)
        return ModelOutput(predictions=np.asarray(matrix[:, 0], dtype=np.float64) + self.offset)


def service(model: Any, release: str = "m:1") -> InferenceService:
    return InferenceService(
        model,
        schema=SCHEMA,
        inputs=["x", "y"],
        config=ReleaseConfig(),
        release=release,
        release_digest="sha256:0",
    )


def cols(*xs: float) -> dict[str, np.ndarray]:
    return {"x": np.array(xs, dtype=np.float64), "y": np.zeros(len(xs))}


def run(coro_factory: Callable[[], Any]) -> Any:
    return asyncio.run(coro_factory())


@pytest.mark.parametrize("mode", ["inline", "thread", "auto"])
def test_concurrent_requests_merge_into_one_batch_and_split_back(mode: BatchMode) -> None:
    model = EchoModel()
    svc = service(model)
    reports: list[BatchReport] = []

    async def main() -> list[Any]:
        batcher = AdaptiveBatcher("m", mode=mode, on_batch=reports.append)
        try:
            return await asyncio.gather(
                *(batcher.infer(svc, cols(i, i + 0.5), n_rows=2) for i in range(10))
            )
        finally:
            await batcher.close()

    parts = run(main)
    assert model.batches == [20]
    for i, part in enumerate(parts):
        assert part.predictions.tolist() == [i, i + 0.5]
        assert part.rejections == []
        assert part.batch_rows == 20
        assert part.release == "m:1"
    assert [(r.rows, r.requests, r.failed) for r in reports] == [(20, 10, False)]


def test_a_lone_request_is_not_delayed_by_the_batch_time() -> None:
    svc = service(EchoModel())

    async def main() -> float:
        batcher = AdaptiveBatcher("m", max_batch_time_ms=2000, mode="inline")
        try:
            started = time.perf_counter()
            await batcher.infer(svc, cols(1), n_rows=1)
            return time.perf_counter() - started
        finally:
            await batcher.close()

    assert run(main) < 0.5  # far below the 2 s bound: nothing else was queued


def test_batches_are_bounded_by_max_batch_size_and_big_requests_run_whole() -> None:
    model = EchoModel()
    svc = service(model)

    async def main() -> None:
        batcher = AdaptiveBatcher("m", max_batch_size=4, mode="inline")
        try:
            await asyncio.gather(
                *(batcher.infer(svc, cols(1, 2), n_rows=2) for _ in range(5)),
                batcher.infer(svc, cols(*range(9)), n_rows=9),
            )
        finally:
            await batcher.close()

    run(main)
    assert model.batches == [4, 4, 2, 9]


def test_rejections_go_to_the_request_that_sent_the_row() -> None:
    svc = service(EchoModel())

    async def main() -> list[Any]:
        batcher = AdaptiveBatcher("m", mode="inline")
        try:
            return await asyncio.gather(
                batcher.infer(svc, cols(1, 2), n_rows=2),
                batcher.infer(svc, cols(3, float("nan")), n_rows=2),
                batcher.infer(svc, cols(5), n_rows=1),
            )
        finally:
            await batcher.close()

    good, bad, last = run(main)
    assert good.predictions.tolist() == [1, 2] and good.rejections == []
    assert bad.predictions.tolist() == [3]
    assert [(r.row, r.field) for r in bad.rejections] == [(1, "x")]
    assert "NaN not allowed" in bad.rejections[0].reason
    assert last.predictions.tolist() == [5] and last.rejections == []


def test_a_bool_column_is_checked_as_if_it_ran_alone() -> None:
    svc = service(EchoModel())

    async def main() -> list[Any]:
        batcher = AdaptiveBatcher("m", mode="inline")
        try:
            return await asyncio.gather(
                batcher.infer(svc, cols(1.0), n_rows=1),
                batcher.infer(
                    svc, {"x": np.array([True]), "y": np.zeros(1)}, n_rows=1
                ),  # promoted to 1.0 by a naive concatenate
            )
        finally:
            await batcher.close()

    fine, wrong = run(main)
    assert fine.rejections == []
    assert [r.reason for r in wrong.rejections] == ["Expected `float`, got `bool` - at `$.x`"]


def test_model_failures_only_fail_the_rows_that_caused_them() -> None:
    model = FailingModel(fail_when=lambda m: m[:, 0] < 0)
    svc = service(model)

    async def main() -> list[Any]:
        batcher = AdaptiveBatcher("m", mode="inline")
        try:
            return await asyncio.gather(
                batcher.infer(svc, cols(1, 2), n_rows=2),
                batcher.infer(svc, cols(-1), n_rows=1),
            )
        finally:
            await batcher.close()

    good, poisoned = run(main)
    assert good.rejections == [] and len(good.predictions) == 2
    assert [(r.row, r.stage) for r in poisoned.rejections] == [(0, "predict")]


class WrongCountModel:
    flavor = "testing"

    def predict(self, matrix: Matrix) -> ModelOutput:
        return ModelOutput(predictions=np.zeros(len(matrix) + 1))


def test_a_batch_that_raises_fails_every_request_and_the_batcher_keeps_going() -> None:
    broken, fine = service(WrongCountModel()), service(EchoModel())
    reports: list[BatchReport] = []

    async def main() -> tuple[list[Any], Any]:
        batcher = AdaptiveBatcher("m", mode="thread", on_batch=reports.append)
        try:
            failed = await asyncio.gather(
                batcher.infer(broken, cols(1), n_rows=1),
                batcher.infer(broken, cols(2), n_rows=1),
                return_exceptions=True,
            )
            return failed, await batcher.infer(fine, cols(3), n_rows=1)
        finally:
            await batcher.close()

    failed, after = run(main)
    assert all(isinstance(e, ModelError) for e in failed)
    assert after.predictions.tolist() == [3]
    assert [r.failed for r in reports] == [True, False]


def test_requests_run_on_the_release_they_were_decoded_against() -> None:
    old, new = EchoModel(offset=0), EchoModel(offset=100)
    old_svc, new_svc = service(old, "m:1"), service(new, "m:2")

    async def main() -> list[Any]:
        batcher = AdaptiveBatcher("m", mode="inline")
        try:
            return await asyncio.gather(
                batcher.infer(old_svc, cols(1), n_rows=1),
                batcher.infer(old_svc, cols(2), n_rows=1),
                batcher.infer(new_svc, cols(3), n_rows=1),
                batcher.infer(old_svc, cols(4), n_rows=1),
            )
        finally:
            await batcher.close()

    parts = run(main)
    assert [(p.release, p.predictions.tolist()) for p in parts] == [
        ("m:1", [1]),
        ("m:1", [2]),
        ("m:2", [103]),
        ("m:1", [4]),
    ]
    assert old.batches == [2, 1] and new.batches == [1]


def test_a_full_queue_answers_overloaded_with_a_retry_hint() -> None:
    svc = service(EchoModel(delay_s=0.2))

    async def main() -> list[Any]:
        batcher = AdaptiveBatcher("m", max_queue_rows=3, max_batch_size=1, mode="thread")
        try:
            first = asyncio.ensure_future(batcher.infer(svc, cols(1), n_rows=1))
            await asyncio.sleep(0.05)  # the first batch is running, the queue is empty
            queued = [
                asyncio.ensure_future(batcher.infer(svc, cols(1), n_rows=1)) for _ in range(3)
            ]
            await asyncio.sleep(0)
            with pytest.raises(OverloadedError) as info:
                await batcher.infer(svc, cols(1), n_rows=1)
            assert info.value.status == 503
            assert info.value.retry_after >= 1
            assert "3 rows queued (limit 3)" in str(info.value)
            assert batcher.queued_rows == 3 and batcher.queued_requests == 3
            return await asyncio.gather(first, *queued)
        finally:
            await batcher.close()

    assert len(run(main)) == 4


def test_a_cancelled_request_leaves_the_queue_without_running() -> None:
    model = EchoModel(delay_s=0.1)
    svc = service(model)

    async def main() -> None:
        batcher = AdaptiveBatcher("m", max_batch_size=1, mode="thread")
        try:
            first = asyncio.ensure_future(batcher.infer(svc, cols(1), n_rows=1))
            await asyncio.sleep(0.02)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(batcher.infer(svc, cols(2), n_rows=1), 0.01)
            await first
            await batcher.infer(svc, cols(3), n_rows=1)
        finally:
            await batcher.close()

    run(main)
    assert model.batches == [1, 1]  # the timed-out request never reached the model


def test_close_fails_queued_requests_and_refuses_new_ones() -> None:
    svc = service(EchoModel(delay_s=0.1))

    async def main() -> None:
        batcher = AdaptiveBatcher("m", max_batch_size=1, mode="thread")
        running = asyncio.ensure_future(batcher.infer(svc, cols(1), n_rows=1))
        await asyncio.sleep(0.02)
        queued = asyncio.ensure_future(batcher.infer(svc, cols(2), n_rows=1))
        await asyncio.sleep(0)
        await batcher.close()
        for future in (running, queued):
            with pytest.raises(OverloadedError, match="shutting down"):
                await future
        with pytest.raises(OverloadedError, match="shutting down"):
            await batcher.infer(svc, cols(3), n_rows=1)

    run(main)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_batch_size": 0}, {"max_queue_rows": 0}, {"max_batch_time_ms": -1}],
)
def test_bounds_must_be_positive(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="Batching for model 'm'"):
        AdaptiveBatcher("m", **kwargs)


class ThreadRecorder:
    """Records which thread ran each batch; slow (20 ms) for batches of 4 rows or more."""

    flavor = "testing"

    def __init__(self) -> None:
        self.threads: list[tuple[int, str]] = []

    def predict(self, matrix: Matrix) -> ModelOutput:
        self.threads.append((len(matrix), threading.current_thread().name))
        if len(matrix) >= 4:
            time.sleep(0.02)
        return ModelOutput(predictions=np.zeros(len(matrix)))


def test_auto_mode_runs_small_batches_inline_and_moves_slow_sizes_to_the_thread() -> None:
    model = ThreadRecorder()
    svc = service(model)

    async def main() -> None:
        batcher = AdaptiveBatcher("m", mode="auto", inline_budget_ms=5)
        try:
            for rows in (1, 4, 4, 4, 1, 8):
                await batcher.infer(svc, cols(*range(rows)), n_rows=rows)
        finally:
            await batcher.close()

    run(main)
    main_thread = threading.main_thread().name
    assert [(rows, name == main_thread) for rows, name in model.threads] == [
        (1, True),  # fast: inline
        (4, True),  # over the budget inline: could be a hiccup
        (4, True),  # twice in a row: not a hiccup
        (4, False),  # from then on 4 rows and more go to the worker thread
        (1, True),
        (8, False),
    ]


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="mode 'fast' is not auto, inline or thread"):
        AdaptiveBatcher("m", mode="fast")  # type: ignore[arg-type]
