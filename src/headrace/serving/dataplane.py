"""The data plane: what a request means, whichever transport carried it.

HTTP (`headrace.serving.app`) and gRPC (`headrace.serving.grpc_server`) only translate wire
formats; both call one `DataPlane` for inference, model metadata and readiness, the
repository extension, and the server's lifecycle (start, drain, stop). It owns the
adaptive batchers, so requests for one model join the same batches whichever transport
they came by, and it is the one place that will route a request to a release arm
(MLServer's ``DataPlane`` has the same place under its REST and gRPC servers).

Nothing here knows HTTP or gRPC: errors are `ProtocolError`s and the repository's
errors, which each transport maps to its own status by one table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from headrace.serving.batching import AdaptiveBatcher, BatchPart
from headrace.serving.codec import (
    InputTensor,
    OutputTensor,
    columns_from_inputs,
    outputs_from_part,
    raise_for_rejections,
)
from headrace.serving.config import ServeSpec
from headrace.serving.errors import InferenceTimeoutError, OverloadedError
from headrace.serving.metrics import ServerMetrics
from headrace.serving.repository import ModelMetadata, ModelRepository, ModelStatus

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

    `startup` starts the repository, then the ``on_startup`` hooks (the gRPC server, the
    start banner); `shutdown` runs the ``on_shutdown`` hooks, then stops the batchers and
    the repository. `drain` answers requests still waiting when a stop begins.
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

    # -- lifecycle --------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the repository (alias watching, preloading), then the hooks."""
        await self.repository.start()
        for hook in self.on_startup:
            await hook()
        self.started = True

    async def shutdown(self) -> None:
        """Stop the hooks, the batchers and the repository."""
        self.stopping = True
        for hook in self.on_shutdown:
            await hook()
        for batcher in list(self.batchers.values()):
            await batcher.close()
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
    ) -> tuple[BatchPart, list[OutputTensor]]:
        """Answer one inference request, whatever the transport.

        Resolves the model, lays the tensors out as columns, waits for the request's
        share of a batch (within ``limits.timeout_s``), and turns it into output tensors.

        Parameters
        ----------
        name, version
            The model as requested; version None serves the alias.
        inputs
            The request's decoded tensors.
        requested
            The output names asked for, or None for the default ones (``probabilities``
            is sent only when asked for).

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
        try:
            async with self.deadline(timeout):
                service = await self.repository.get(name, version)
                self.served.add(name)
                columns, n_rows = columns_from_inputs(service.schema, inputs, model=name)
                batcher = self._batcher(name, version)
                part = await batcher.infer(service, columns, n_rows=n_rows)
        except TimeoutError:
            self.raise_if_draining()
            raise InferenceTimeoutError(
                f"Inference for model '{name}' took longer than {timeout:g} s "
                "(limits.timeout_s): retry, send fewer rows, or raise the timeout"
            ) from None
        raise_for_rejections(part.rejections, model=name, release=part.release, n_rows=part.n_rows)
        outputs = outputs_from_part(
            part.predictions,
            part.scores,
            requested=requested,
            model=name,
            probabilities=part.probabilities,
            classes=part.classes,
        )
        return part, outputs

    def _batcher(self, name: str, version: str | None) -> AdaptiveBatcher:
        key = name if version is None else f"{name}:{version}"
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
