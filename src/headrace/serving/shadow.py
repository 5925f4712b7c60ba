"""Shadow scoring on a server: the candidate scores answered requests in the background.

In a shadow rollout the baseline answers every request; afterwards, off the request's
path, the candidate scores the same inputs (its own batcher, so shadowed requests batch
together). Its outputs go to a JSONL file, one line per request beside the baseline's
predictions and the request's key, and never to the client; the pair counts and the
candidate's errors, latency and scores are evidence. A shadow task can neither delay nor
fail an answer: at most `max_pending` run at once, and a request past that bound (or one
the candidate's full queue refused) is not shadowed: a drop, counted in
``headrace_rollout_shadow_dropped``, with no evidence of the candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from headrace._redact import redact_text
from headrace.inference.service import InferenceService
from headrace.rollout.evidence import PairEvidence
from headrace.rollout.routing import Routing
from headrace.serving.batching import BatchPart
from headrace.serving.codec import InputTensor, columns_from_inputs
from headrace.serving.errors import status_of
from headrace.serving.rollouts import ArmObserver, model_ms, predicted_rows
from headrace.types import Columns

__all__ = ["ShadowJob", "ShadowScorer"]

_log = logging.getLogger(__name__)

_FLUSH_S = 1.0

Infer = Callable[[InferenceService, Columns, int], Awaitable[BatchPart]]


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One answered request the candidate should also score.

    Attributes
    ----------
    name
        The model name requested.
    routing
        The routing the request was answered under (its candidate scores it).
    inputs
        The request's tensors.
    key
        The request's routing key (written beside the outputs), or None.
    answered
        The baseline's answer.
    """

    name: str
    routing: Routing
    inputs: Sequence[InputTensor]
    key: str | None
    answered: BatchPart


class ShadowScorer:
    """Runs `ShadowJob`s in background tasks and writes the candidate's outputs.

    Parameters
    ----------
    path
        The JSONL file (created with its directory at the first line; appended to).
    infer
        Runs the candidate on columns through its batcher.
    observe
        Receives the candidate arm's evidence of each job, with the pairs' counts.
    timeout_s
        How long one shadow task may take before it is given up (an error of the arm).
    max_pending
        Shadow tasks at once; a request past it is dropped (not shadowed).
    on_drop
        Called with the model name for every dropped request (a metric).
    """

    def __init__(
        self,
        path: Path,
        *,
        infer: Infer,
        observe: ArmObserver,
        timeout_s: float,
        max_pending: int = 1024,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.dropped = 0
        self.written = 0
        self._infer = infer
        self._observe = observe
        self._on_drop = on_drop
        self._tasks: set[asyncio.Task[None]] = set()
        self._file: IO[bytes] | None = None
        self._flushed = time.monotonic()
        self._closed = False

    @property
    def pending(self) -> int:
        """Shadow tasks running now."""
        return len(self._tasks)

    def submit(self, job: ShadowJob) -> bool:
        """Start scoring `job` in the background; False when it was dropped."""
        if self._closed or len(self._tasks) >= self.max_pending:
            self._drop(job.name)
            return False
        task = asyncio.get_running_loop().create_task(self._run(job), name="headrace-shadow")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _drop(self, name: str) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(name)

    async def close(self, *, within_s: float = 5.0) -> None:
        """Let running shadow tasks finish (within `within_s`), then close the file."""
        self._closed = True
        tasks = list(self._tasks)
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=within_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    async def _run(self, job: ShadowJob) -> None:
        candidate = job.routing.candidate
        if candidate is None:  # pragma: no cover - submit is only called with a candidate
            return
        answered = job.answered
        rows = answered.n_rows
        record: dict[str, Any] = {
            "at": time.time(),
            "model": job.name,
            "rollout": job.routing.rollout_id,
            "step": job.routing.step,
            "key": job.key,
            "baseline_release": answered.release,
            "release": candidate.release,
            "rows": rows,
            "baseline_predictions": _values(answered.predictions),
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                columns, n_rows = columns_from_inputs(candidate.schema, job.inputs, model=job.name)
                part = await self._infer(candidate, columns, n_rows)
        except Exception as exc:
            if status_of(exc) == 503:  # the candidate's queue was full: not scored at all
                self._drop(job.name)
                return
            # The candidate could not score what the baseline answered: each row is an
            # error of the candidate arm (its schema, its model, its time).
            self._observe(
                job.name,
                job.routing,
                "candidate",
                rows=rows,
                errors=rows,
                latency_ms=None,
                scores=None,
            )
            record["error"] = f"{type(exc).__name__} ({status_of(exc)}): " + redact_text(str(exc))
            self._write(record)
            return
        pairs = PairEvidence()
        mine = predicted_rows(part)
        common, b_at, c_at = np.intersect1d(
            predicted_rows(answered), mine, assume_unique=True, return_indices=True
        )
        if len(common):
            pairs.record(
                baseline_predictions=np.asarray(answered.predictions)[b_at],
                candidate_predictions=np.asarray(part.predictions)[c_at],
                baseline_scores=None if answered.scores is None else answered.scores[b_at],
                candidate_scores=None if part.scores is None else part.scores[c_at],
            )
        self._observe(
            job.name,
            job.routing,
            "candidate",
            rows=rows,
            errors=len(part.rejections),
            latency_ms=model_ms(part),
            scores=part.scores,
            pairs=pairs,
        )
        record["predictions"] = _values(part.predictions)
        record["scores"] = None if part.scores is None else part.scores.tolist()
        record["rejections"] = [
            {"row": r.row, "stage": r.stage, "reason": r.reason} for r in part.rejections
        ]
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        """Append one line; flush when nothing else is pending or a second passed (a small
        buffered write on the loop: cheaper than a thread hand-off per line)."""
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
            self.written += 1
            now = time.monotonic()
            if len(self._tasks) <= 1 or now - self._flushed >= _FLUSH_S:
                self._file.flush()
                self._flushed = now
        except (OSError, TypeError) as exc:
            self.dropped += 1
            _log.warning("cannot write a shadow line to %s: %s", self.path, exc)


def _values(array: Any) -> list[Any]:
    """A prediction array as JSON values (text stays text, numbers numbers)."""
    values: list[Any] = np.asarray(array).tolist()
    return values
