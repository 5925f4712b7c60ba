"""Adaptive batching: concurrent requests for one model run as one call of the core.

Python pays per call, so a server that calls the model once per request spends its time
in overhead. `AdaptiveBatcher` queues the requests of one model; a single task takes what
is queued (up to `max_batch_size` rows), runs it once through `InferenceService.infer`
and hands every request its own slice of the answer.

How long a batch waits to grow is decided by arrivals, not by a timer: after taking the
queue, the batcher lets the event loop turn once; if more requests arrived it takes them
and turns again, until a turn brings nothing, the batch is full, or `max_batch_time_ms`
has passed since its first request arrived. A lone request therefore runs at once (one
loop turn, microseconds), and under load batches grow to what the backlog holds while
the previous batch runs. The queue is bounded (`max_queue_rows`): past it `infer`
raises `OverloadedError` with a retry hint instead of letting latency grow.

Every request carries the `InferenceService` it was decoded against and a batch only
merges requests of one service, so a release swap is atomic: requests that arrived
before it finish on the old release, later ones run on the new one, and a request's
columns always meet the schema they were checked against.

Transport-neutral: nothing here knows HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import numpy.typing as npt

from headrace.errors import ConfigError
from headrace.inference.service import InferenceResult, InferenceService
from headrace.inference.validate import MISSING, Rejection
from headrace.serving.errors import OverloadedError
from headrace.types import Array, Columns

__all__ = ["AdaptiveBatcher", "BatchMode", "BatchPart", "BatchReport"]

BatchMode = Literal["auto", "inline", "thread"]
"""Where a batch runs: see `AdaptiveBatcher`."""


@dataclass(frozen=True, slots=True)
class BatchPart:
    """One request's share of a batch's answer.

    Attributes
    ----------
    predictions
        The predictions of the request's rows that got one, in row order.
    scores
        Their float64 scores, or None when the model gives none.
    rejections
        One per row of the request without a prediction, rows relative to the request.
    release
        The release that answered, like ``fraud:3``.
    release_digest
        Its content digest.
    n_rows
        The request's row count.
    batch_rows
        The row count of the batch the request ran in (for tests and metrics).
    probabilities
        float64 ``(len(predictions), classes)``: every class's probability for the
        request's predicted rows, or None when the model gives none.
    classes
        The class names of the `probabilities` columns, or None.
    stages_ns
        The batch's inference stages (`InferenceResult.stages_ns`): its model time is
        evidence in a rollout.
    """

    predictions: Array
    scores: npt.NDArray[np.float64] | None
    rejections: list[Rejection]
    release: str
    release_digest: str
    n_rows: int
    batch_rows: int
    probabilities: npt.NDArray[np.float64] | None = None
    classes: tuple[str, ...] | None = None
    stages_ns: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What one batch did, for metrics (see `AdaptiveBatcher`'s ``on_batch``).

    Attributes
    ----------
    rows
        Rows in the batch.
    requests
        Requests merged into it.
    waited_s
        How long its oldest request queued before the batch started.
    run_s
        How long the inference call took.
    release
        The release that ran it.
    failed
        Whether the call raised (every request of the batch got the error).
    """

    rows: int
    requests: int
    waited_s: float
    run_s: float
    release: str
    failed: bool


class _Pending:
    """A request waiting in the queue."""

    __slots__ = ("arrived", "columns", "future", "n_rows", "service")

    def __init__(
        self,
        service: InferenceService,
        columns: Columns,
        n_rows: int,
        future: asyncio.Future[BatchPart],
    ) -> None:
        self.service = service
        self.columns = columns
        self.n_rows = n_rows
        self.future = future
        self.arrived = time.monotonic()


class AdaptiveBatcher:
    """Merge concurrent requests for one model into batches, run each once, split back.

    Parameters
    ----------
    name
        The model's name (for messages).
    max_batch_size
        The most rows merged into one batch. A request with more rows runs alone, whole.
    max_batch_time_ms
        The longest a batch keeps growing after its first request arrived, while requests
        keep arriving; 0 runs whatever is queued at once.
    max_queue_rows
        Rows that may wait; past it `infer` raises `OverloadedError`. A request alone in
        an empty queue is always accepted.
    mode
        Where a batch runs: ``inline`` in the event loop's thread (no hand-off, but the
        loop, health checks and timeouts included, waits for the model), ``thread`` in
        a worker thread, or ``auto`` (default): inline while batches finish within
        `inline_budget_ms`, in the thread from the batch size that once took longer
        (measured: a hand-off to a thread costs 0.3 to 3 ms on a busy 2-core machine,
        more than a small model's whole call; see benchmarks/batcher_latency.py).
    inline_budget_ms
        How long an inline batch may hold the event loop in ``auto`` mode.
    executor
        The worker thread(s); the batcher owns a one-thread executor when omitted (one
        batch of a model runs at a time, the next one queues meanwhile).
    on_batch
        Called after every batch with its `BatchReport`.

    Raises
    ------
    ConfigError
        When a bound is not positive.
    """

    def __init__(
        self,
        name: str,
        *,
        max_batch_size: int = 64,
        max_batch_time_ms: float = 2.0,
        max_queue_rows: int = 16_384,
        mode: BatchMode = "auto",
        inline_budget_ms: float = 2.0,
        executor: Executor | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        if mode not in ("auto", "inline", "thread"):
            raise ConfigError(
                f"Batching for model '{name}': mode {mode!r} is not auto, inline or thread"
            )
        if max_batch_size < 1 or max_queue_rows < 1 or max_batch_time_ms < 0:
            raise ConfigError(
                f"Batching for model '{name}': max_batch_size ({max_batch_size}) and "
                f"max_queue_rows ({max_queue_rows}) must be at least 1 and "
                f"max_batch_time_ms ({max_batch_time_ms}) at least 0"
            )
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_batch_time_s = max_batch_time_ms / 1000.0
        self.max_queue_rows = max_queue_rows
        self.mode = mode
        self.inline_budget_s = inline_budget_ms / 1000.0
        self.on_batch = on_batch
        self._own_executor = executor is None and mode != "inline"
        self._executor: Executor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
            if self._own_executor
            else executor
        )
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._seconds_per_row = 0.0
        # auto mode: batches of this many rows or more run in the thread (one took longer
        # than the budget inline); a fast threaded batch raises it again
        self._thread_from_rows = 1 << 62
        self._over_budget = False

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch."""
        return self._queued_rows

    @property
    def queued_requests(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def infer(self, service: InferenceService, columns: Columns, *, n_rows: int) -> BatchPart:
        """Queue one request and wait for its share of a batch.

        Parameters
        ----------
        service
            The release the request was decoded against; its batch runs on it.
        columns
            The request's columns (see `headrace.serving.codec.columns_from_inputs`).
        n_rows
            The request's row count.

        Returns
        -------
        BatchPart
            The request's predictions and rejections.

        Raises
        ------
        OverloadedError
            When the queue is full or the batcher is closing.
        Exception
            Whatever the inference call raised for the whole batch (a `ModelError` when
            the model breaks its contract); rows the model raised on are rejections.
        """
        if self._closed:
            raise self._stopping()
        if self._queue and self._queued_rows + n_rows > self.max_queue_rows:
            raise OverloadedError(
                f"Model '{self.name}' has {self._queued_rows} rows queued (limit "
                f"{self.max_queue_rows}): retry after the Retry-After delay, or raise "
                "max_queue_rows / add replicas",
                retry_after=self._retry_after(),
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchPart] = loop.create_future()
        self._queue.append(_Pending(service, columns, n_rows, future))
        self._queued_rows += n_rows
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"batcher-{self.name}")
        if self._wake is not None:
            self._wake.set()
        return await future

    async def close(self) -> None:
        """Stop the batching task; requests still queued fail with `OverloadedError`."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        _fail(list(self._queue), self._stopping())
        self._queue.clear()
        self._queued_rows = 0
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _stopping(self) -> OverloadedError:
        return OverloadedError(
            f"Model '{self.name}' is shutting down: retry against another replica",
            retry_after=1,
        )

    def _retry_after(self) -> int:
        return max(1, math.ceil(self._queued_rows * self._seconds_per_row))

    # -- the batching task ------------------------------------------------------------

    async def _run(self) -> None:
        wake = self._wake
        while True:
            if not self._queue and wake is not None:
                wake.clear()
                await wake.wait()
            batch = await self._collect()
            if batch:
                await self._execute(batch)

    def _take(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests of the batch's service into `batch` while they fit."""
        queue = self._queue
        while queue:
            head = queue[0]
            if head.future.done():  # cancelled (timeout, client gone) while queued
                queue.popleft()
                self._queued_rows -= head.n_rows
                continue
            if batch and (
                head.service is not batch[0].service or rows + head.n_rows > self.max_batch_size
            ):
                break
            queue.popleft()
            self._queued_rows -= head.n_rows
            batch.append(head)
            rows += head.n_rows
        return rows

    async def _collect(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = self._take(batch, 0)
        if not batch or self.max_batch_time_s <= 0:
            return batch
        deadline = batch[0].arrived + self.max_batch_time_s
        while rows < self.max_batch_size and not self._queue:
            await asyncio.sleep(0)  # one loop turn: requests already read may join
            if not self._queue:
                break
            rows = self._take(batch, rows)
            if time.monotonic() >= deadline:
                break
        return [p for p in batch if not p.future.done()]

    async def _execute(self, batch: list[_Pending]) -> None:
        service = batch[0].service
        n_rows = sum(p.n_rows for p in batch)
        started = time.monotonic()
        waited = started - batch[0].arrived
        inline = self.mode == "inline" or (self.mode == "auto" and n_rows < self._thread_from_rows)
        try:
            columns, n_rows = _merge(batch)
            if inline:
                result = service.infer(columns, n_rows=n_rows)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._executor, partial(service.infer, columns, n_rows=n_rows)
                )
            _split(batch, result)
        except asyncio.CancelledError:
            _fail(batch, self._stopping())
            raise
        except Exception as exc:  # the whole batch failed: every request learns why
            _fail(batch, exc)
            self._report(batch, n_rows, waited, time.monotonic() - started, service, True)
            return
        run_s = time.monotonic() - started
        if n_rows:
            self._seconds_per_row = 0.8 * self._seconds_per_row + 0.2 * run_s / n_rows
        if self.mode == "auto":
            self._adapt(n_rows, run_s, inline=inline)
        self._report(batch, n_rows, waited, run_s, service, False)

    def _adapt(self, rows: int, run_s: float, *, inline: bool) -> None:
        """Move the inline/thread boundary after a batch of `rows` took `run_s`.

        Two inline batches in a row over the budget move their size to the thread (one
        may be a hiccup: a GC pause, a busy core); a threaded batch well within the
        budget (half) moves the boundary back above its size.
        """
        if run_s > self.inline_budget_s:
            if inline and self._over_budget:
                self._thread_from_rows = min(self._thread_from_rows, max(rows, 1))
            self._over_budget = inline
        else:
            self._over_budget = False
            if not inline and run_s < self.inline_budget_s / 2:
                self._thread_from_rows = max(self._thread_from_rows, 2 * rows)

    def _report(
        self,
        batch: list[_Pending],
        rows: int,
        waited: float,
        run_s: float,
        service: InferenceService,
        failed: bool,
    ) -> None:
        if self.on_batch is not None:
            self.on_batch(
                BatchReport(
                    rows=rows,
                    requests=len(batch),
                    waited_s=waited,
                    run_s=run_s,
                    release=service.release,
                    failed=failed,
                )
            )


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _merge(batch: list[_Pending]) -> tuple[Columns, int]:
    """One columnar batch from the requests' columns, in queue order."""
    if len(batch) == 1:
        return batch[0].columns, batch[0].n_rows
    names: dict[str, None] = {}
    for pending in batch:
        names.update(dict.fromkeys(pending.columns))
    merged: dict[str, Array] = {}
    for name in names:
        parts: list[Array] = []
        for pending in batch:
            column = pending.columns.get(name)
            if column is None:  # an optional field this request left out
                column = np.full(pending.n_rows, MISSING, dtype=object)
            parts.append(column)
        dtype = parts[0].dtype
        if all(part.dtype == dtype for part in parts):
            merged[name] = np.concatenate(parts)
        else:
            # Mixed dtypes would be promoted (a bool column would become 1.0 in a float
            # one) and a request's validity would depend on its batch mates: as Python
            # values, every request is checked as if it ran alone.
            merged[name] = np.concatenate([part.astype(object) for part in parts])
    return merged, sum(p.n_rows for p in batch)


def _split(batch: list[_Pending], result: InferenceResult) -> None:
    """Hand every request its rows of `result`."""
    rows = result.rows
    rejections = result.rejections
    rejected_rows = [r.row for r in rejections]
    batch_rows = result.n_rows
    probabilities = result.probabilities
    start = 0
    for pending in batch:
        stop = start + pending.n_rows
        lo, hi = np.searchsorted(rows, [start, stop])
        r_lo, r_hi = np.searchsorted(rejected_rows, [start, stop]) if rejected_rows else (0, 0)
        mine = [
            Rejection(row=r.row - start, field=r.field, reason=r.reason, stage=r.stage)
            for r in rejections[r_lo:r_hi]
        ]
        part = BatchPart(
            predictions=result.predictions[lo:hi],
            scores=None if result.scores is None else result.scores[lo:hi],
            rejections=mine,
            release=result.release,
            release_digest=result.release_digest,
            n_rows=pending.n_rows,
            batch_rows=batch_rows,
            probabilities=None if probabilities is None else probabilities[lo:hi],
            classes=result.classes,
            stages_ns=result.stages_ns,
        )
        if not pending.future.done():
            pending.future.set_result(part)
        start = stop
