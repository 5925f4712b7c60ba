"""The data plane: what a request means, whichever transport carried it.

HTTP (`headrace.serving.app`) and gRPC (`headrace.serving.grpc_server`) only translate wire
formats; both call one `DataPlane` for inference, model metadata and readiness, the
repository extension, and the server's lifecycle (start, drain, stop). It owns the
adaptive batchers, so requests for one model join the same batches whichever transport
they came by, and it is the one place that routes a request to a release arm
(MLServer's ``DataPlane`` has the same place under its REST and gRPC servers).

During a rollout of a name (`headrace.serving.rollouts`), a request for its alias is
assigned an arm by its key (sticky, the same CRC-32 buckets as the stream workers) or at
random without one. Canary and A/B: the arm's release answers, through its own batcher,
and the answer names it. Shadow: the baseline answers and the candidate scores the same
inputs afterwards (`headrace.serving.shadow`). Each arm's rows, model failures, model time
and scores go to a `RolloutParticipant`, which writes them to the registry each
``rollout_poll_s`` (and judges while it holds the rollout's lease), and to ``/metrics``.

Nothing here knows HTTP or gRPC: errors are `ProtocolError`s and the repository's
errors, which each transport maps to its own status by one table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

from headrace.inference.service import InferenceService
from headrace.rollout.evidence import PairEvidence
from headrace.rollout.participant import RolloutParticipant, instance_name
from headrace.rollout.routing import Arm, Routing
from headrace.serving.batching import AdaptiveBatcher, BatchPart
from headrace.serving.codec import (
    InputTensor,
    OutputTensor,
    columns_from_inputs,
    outputs_from_part,
    raise_for_rejections,
)
from headrace.serving.config import ServeSpec
from headrace.serving.errors import InferenceTimeoutError, OverloadedError, status_of
from headrace.serving.metrics import ServerMetrics
from headrace.serving.repository import ModelMetadata, ModelRepository, ModelStatus
from headrace.serving.rollouts import EvidenceTally, assign_arm, model_ms
from headrace.serving.shadow import ShadowJob, ShadowScorer
from headrace.types import Columns

__all__ = ["DataPlane"]


class DataPlane:
    """Inference, metadata, readiness, batchers and lifecycle for every transport.

    Parameters
    ----------
    repository
        Resolves model names to loaded inference services.
    config
        Batching, limits and tokens.
    metrics
        Where batch metrics go (share its registry with the repository).

    `startup` starts the repository and the rollout participant, then the ``on_startup``
    hooks (the gRPC server, the start banner); `shutdown` runs the ``on_shutdown`` hooks,
    then stops the shadow scoring, the batchers, the participant (its last evidence
    written) and the repository. `drain` answers requests still waiting when a stop
    begins.
    """

    def __init__(
        self, repository: ModelRepository, *, config: ServeSpec, metrics: ServerMetrics
    ) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics
        self.batchers: dict[str, AdaptiveBatcher] = {}
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self.started = False
        self.stopping = False
        self.grpc_port: int | None = None  # the gRPC server's bound port, once started
        self.served: set[str] = set()  # names that resolved: safe as metric labels
        self._deadlines: set[asyncio.Timeout] = set()  # of body reads and inferences
        self._drain_at: float | None = None
        self.participant = RolloutParticipant(
            repository.registry, instance=instance_name("server"), interval_s=config.rollout_poll_s
        )
        self.tally = EvidenceTally(self.participant.record)
        self.shadow = ShadowScorer(
            _shadow_path(config),
            infer=self._infer_candidate,
            observe=self._observe_arm,
            timeout_s=config.limits.timeout_s,
            on_drop=self._count_drop,
        )

    # -- lifecycle --------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the repository (alias and rollout watching, preloading), the rollout
        participant, then the hooks."""
        await self.repository.start()
        self.participant.start()
        for hook in self.on_startup:
            await hook()
        self.started = True

    async def shutdown(self) -> None:
        """Stop the hooks, let shadow scoring finish, stop the batchers, write the last
        rollout evidence, stop the repository."""
        self.stopping = True
        for hook in self.on_shutdown:
            await hook()
        await self.shadow.close()
        for batcher in list(self.batchers.values()):
            await batcher.close()
        self.tally.flush()
        await asyncio.to_thread(self.participant.stop)  # writes the last evidence
        await self.repository.stop()

    def drain(self, *, within_s: float) -> None:
        """Answer every request still waiting (for its body, or its batch) within `within_s`.

        The server calls it when a stop begins, so that a stalled upload or a slow batch
        is answered 503 before the shutdown bound, instead of being cancelled mid-way.
        """
        self._drain_at = asyncio.get_running_loop().time() + within_s
        for timer in list(self._deadlines):
            when = timer.when()
            if when is None or when > self._drain_at:
                timer.reschedule(self._drain_at)

    @contextlib.asynccontextmanager
    async def deadline(self, seconds: float) -> AsyncIterator[None]:
        """`asyncio.timeout(seconds)`, brought forward by `drain`."""
        async with asyncio.timeout(seconds) as timer:
            when = timer.when()
            if self._drain_at is not None and (when is None or when > self._drain_at):
                timer.reschedule(self._drain_at)
            self._deadlines.add(timer)
            try:
                yield
            finally:
                self._deadlines.discard(timer)

    def raise_if_draining(self) -> None:
        """Raise `OverloadedError` (503) when a deadline ran out because of `drain`."""
        if self._drain_at is not None:
            raise OverloadedError(
                "The server is stopping and did not finish this request in time: send it "
                "again (to another instance)"
            )

    # -- health, metadata, repository -------------------------------------------------

    def is_ready(self) -> bool:
        """Started, not stopping, and no served name still waits for its first load."""
        if not self.started or self.stopping:
            return False
        index = self.repository.index()
        ready = {s.name for s in index if s.state == "READY"}
        return all(s.state != "LOADING" or s.name in ready for s in index)

    async def metadata(self, name: str, version: str | None) -> ModelMetadata:
        """A model's metadata (reads the registry, off the event loop).

        Raises
        ------
        UnknownModelError
            When the name or version is not served (404).
        """
        return await asyncio.to_thread(self.repository.metadata, name, version)

    async def model_ready(self, name: str, version: str | None) -> bool:
        """Whether a known model is loaded (`UnknownModelError` when it is not known)."""
        await self.metadata(name, version)
        return self.repository.is_ready(name, version)

    def index(self, *, only_ready: bool = False) -> list[ModelStatus]:
        """The repository index, or only its ``READY`` entries."""
        return [s for s in self.repository.index() if not only_ready or s.state == "READY"]

    async def load(self, name: str) -> None:
        """Load and warm the release `name` serves (the repository extension)."""
        await self.repository.load(name)

    async def unload(self, name: str) -> None:
        """Drop every loaded release of `name` (the repository extension)."""
        await self.repository.unload(name)

    # -- inference --------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str | None,
        inputs: Sequence[InputTensor],
        *,
        requested: Sequence[str] | None = None,
        key: str | None = None,
    ) -> tuple[BatchPart, list[OutputTensor]]:
        """Answer one inference request, whatever the transport.

        Resolves the model (during a rollout: the request's arm), lays the tensors out as
        columns, waits for the request's share of a batch (within ``limits.timeout_s``),
        and turns it into output tensors.

        Parameters
        ----------
        name, version
            The model as requested; version None serves the alias.
        inputs
            The request's decoded tensors.
        requested
            The output names asked for, or None for the default ones (``probabilities``
            is sent only when asked for).
        key
            What assigns the request to a rollout arm (the same key always lands on the
            same arm); None draws the arm at random at the candidate's weight.

        Returns
        -------
        tuple
            The request's `BatchPart` (which release answered) and its output tensors.

        Raises
        ------
        ProtocolError
            Bad input (400), a model that raised (500), a full queue (503), the timeout
            (504); the repository's `UnknownModelError` (404) and
            `ModelUnavailableError` (503) pass through.
        """
        timeout = self.config.limits.timeout_s
        routing: Routing | None = None
        arm: Arm = "baseline"
        try:
            async with self.deadline(timeout):
                service = await self.repository.get(name, version)
                self.served.add(name)
                if version is None:
                    routing = self.repository.routing(name, service)
                if routing is None:
                    batched = name if version is None else f"{name}:{version}"
                    columns, n_rows = columns_from_inputs(service.schema, inputs, model=name)
                    part = await self._batcher(batched).infer(service, columns, n_rows=n_rows)
                else:
                    arm = assign_arm(routing, key)
                    part = await self._run_arm(name, routing, arm, inputs)
        except TimeoutError:
            self.raise_if_draining()
            raise InferenceTimeoutError(
                f"Inference for model '{name}' took longer than {timeout:g} s "
                "(limits.timeout_s): retry, send fewer rows, or raise the timeout"
            ) from None
        if routing is not None:
            self._observe_answer(name, routing, arm, part)
        raise_for_rejections(part.rejections, model=name, release=part.release, n_rows=part.n_rows)
        outputs = outputs_from_part(
            part.predictions,
            part.scores,
            requested=requested,
            model=name,
            probabilities=part.probabilities,
            classes=part.classes,
        )
        if routing is not None and routing.shadow and arm == "candidate":
            self.shadow.submit(ShadowJob(name, routing, inputs, key, part))
        return part, outputs

    # -- rollout arms -----------------------------------------------------------------

    async def _run_arm(
        self, name: str, routing: Routing, arm: Arm, inputs: Sequence[InputTensor]
    ) -> BatchPart:
        """Answer with the arm's release (canary, ab) or the baseline (shadow); a batch the
        model failed is evidence against the arm that ran it."""
        service, batcher = routing.baseline, self._batcher(name)
        answering: Arm = "baseline"
        if arm == "candidate" and not routing.shadow and routing.candidate is not None:
            service, answering = routing.candidate, "candidate"
            batcher = self._batcher(service.release)  # the candidate's own batches
        columns, n_rows = columns_from_inputs(service.schema, inputs, model=name)
        try:
            return await batcher.infer(service, columns, n_rows=n_rows)
        except Exception as exc:
            if status_of(exc) == 500:  # the model failed, not the input nor the server
                self._observe_arm(
                    name,
                    routing,
                    answering,
                    rows=n_rows,
                    errors=n_rows,
                    latency_ms=None,
                    scores=None,
                )
            raise

    def _observe_answer(self, name: str, routing: Routing, arm: Arm, part: BatchPart) -> None:
        """The answering arm's evidence of one request (in shadow: the baseline's)."""
        failed = sum(1 for r in part.rejections if r.stage == "predict")
        self._observe_arm(
            name,
            routing,
            "baseline" if routing.shadow else arm,
            rows=part.n_rows,
            errors=failed,
            latency_ms=model_ms(part),
            scores=part.scores,
        )

    def _observe_arm(
        self,
        name: str,
        routing: Routing,
        arm: Arm,
        *,
        rows: int,
        errors: int,
        latency_ms: float | None,
        scores: np.ndarray | None,
        pairs: PairEvidence | None = None,
    ) -> None:
        """Count one request's evidence of `arm` for the participant and the metrics."""
        self.tally.add(
            routing,
            arm,
            rows=rows,
            errors=errors,
            latency_ms=latency_ms,
            scores=scores,
            pairs=pairs,
        )
        seconds = None if latency_ms is None else latency_ms / 1000.0
        self.metrics.observe_arm(name, arm, rows=rows, errors=errors, seconds=seconds)

    async def _infer_candidate(
        self, service: InferenceService, columns: Columns, n_rows: int
    ) -> BatchPart:
        """A shadowed request on the candidate's own batcher (its batches never mix with
        the baseline's answers)."""
        return await self._batcher(service.release).infer(service, columns, n_rows=n_rows)

    def _count_drop(self, name: str) -> None:
        self.metrics.shadow_dropped.labels(name).inc()

    def _batcher(self, key: str) -> AdaptiveBatcher:
        """The batcher of `key`: a name (its alias), or a release (``fraud:2``, asked for
        by version or answering as a rollout's candidate)."""
        batcher = self.batchers.get(key)
        if batcher is None:
            batching = self.config.batching
            batcher = self.batchers[key] = AdaptiveBatcher(
                key,
                max_batch_size=batching.max_batch_size,
                max_batch_time_ms=batching.max_batch_time_ms,
                max_queue_rows=batching.max_queue_rows,
                mode=batching.mode,
                inline_budget_ms=batching.inline_budget_ms,
                on_batch=self.metrics.batch_observer(key),
            )
        return batcher


def _shadow_path(config: ServeSpec) -> Path:
    """The shadow file: the config's, else ``HEADRACE_HOME/shadow/serving.jsonl`` (read
    here, at the server's start-up edge, as the settings docstring allows)."""
    if config.shadow_path is not None:
        return Path(config.shadow_path).expanduser()
    from headrace.settings import Settings

    return (Settings().home / "shadow" / "serving.jsonl").absolute()
