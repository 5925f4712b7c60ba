"""The served-model repository: model names to warmed-up inference services, kept current.

A model name resolves through the registry: ``fraud`` serves the release its `alias`
(``champion`` by default) points at, version ``"7"`` serves ``fraud:7``. Releases load on
demand into a memory-budgeted `ModelPool` (one load however many requests wait for it),
each answering a warm-up batch before it takes traffic. When an alias moves (a promotion,
``headrace rollback``) the repository loads and warms the new release, then switches to
it in one step: requests in flight finish on the release they hold, new ones get the new
release, and none fails for the swap. Moves are noticed by polling the registry and, for
a PostgreSQL registry, by LISTEN/NOTIFY. On the same ticks `ServedRollouts` follows each
name's running rollout: its candidate loads through the same pool, and `routing` tells
the data plane which releases share a name's traffic.

The HTTP and gRPC servers call the same repository; it knows nothing of either wire.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

from headrace.errors import (
    ConfigError,
    HeadraceError,
    ModelUnavailableError,
    ReleaseNotFoundError,
    UnknownModelError,
)
from headrace.registry.refs import ALIAS_PATTERN, DEFAULT_ALIAS, ReleaseRef
from headrace.registry.store import Registry, Release
from headrace.runtimes.pool import ModelPool
from headrace.serving._loading import (
    PreparedRelease,
    ServedRelease,
    load_release,
    oip_datatype,
    prepare_release,
)
from headrace.serving._watch import AliasWatcher
from headrace.serving.codec import OUTPUT_PROBABILITIES
from headrace.serving.rollouts import ServedRollouts

if TYPE_CHECKING:
    import prometheus_client

    from headrace.inference.service import InferenceService
    from headrace.rollout.routing import Routing

__all__ = [
    "OUTPUT_PREDICTION",
    "OUTPUT_SCORE",
    "ModelMetadata",
    "ModelRepository",
    "ModelState",
    "ModelStatus",
    "TensorMetadata",
]

_log = logging.getLogger(__name__)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/[^\s'\"`,;()]*[^\s'\"`,;().]")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"`]+")


def _scrub_paths(text: str) -> str:
    """`text` without the server's file paths and URLs (a client may read it; the log has
    the original)."""
    return _ABSOLUTE_PATH.sub("<path>", _URL.sub("<location>", text))


def _shown(name: str) -> str:
    """A client's model name, cut short for a message."""
    return name if len(name) <= 64 else f"{name[:64]}..."


OUTPUT_PREDICTION = "prediction"
"""Name of the output tensor holding one prediction per row."""

OUTPUT_SCORE = "score"
"""Name of the output tensor holding one score per row (classifiers with probabilities)."""

ModelState = Literal["READY", "UNAVAILABLE", "LOADING"]
"""A model's state in the repository index (the protocol's repository extension)."""

RETRY_FAILED_S = 10.0
"""A release whose load failed is not tried again for this long (its error is repeated)."""

_VERSION = re.compile(r"[0-9]{1,9}")

# What a schema field type reaches the protocol as: text for everything not numeric.
_FIELD_DATATYPES = {
    "float": "FP64",
    "int": "INT64",
    "bool": "BOOL",
    "string": "BYTES",
    "category": "BYTES",
    "timestamp": "BYTES",
}

_Key = tuple[str, int]


class TensorMetadata(NamedTuple):
    """An input or output tensor: its name, protocol datatype and shape (-1: any length)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One entry of the repository index.

    Attributes
    ----------
    name, version
        The model name and the release version (as text, as the protocol has it).
    state
        ``READY`` (loaded and warmed up), ``LOADING`` or ``UNAVAILABLE``.
    reason
        Why it is not ready (empty when it is).
    """

    name: str
    version: str
    state: ModelState
    reason: str


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What the protocol's model metadata endpoint reports.

    Attributes
    ----------
    name
        The model name.
    versions
        Every registered version of the name, oldest first.
    platform
        The release's flavor (``sklearn``, ``onnx``, ...).
    inputs
        One 1-D tensor per schema field, in schema order.
    outputs
        `OUTPUT_PREDICTION`, and `OUTPUT_SCORE` when the model gives scores, and the
        opt-in `OUTPUT_PROBABILITIES` ``[-1, classes]`` when it gives class probabilities.
    version
        The version this metadata describes.
    """

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    version: str


class ModelRepository:
    """Model names to loaded, warmed-up `InferenceService` objects, following aliases.

    Parameters
    ----------
    registry
        Where releases and aliases live.
    names
        The model names to serve; None serves every name in the registry.
    alias
        What a bare model name resolves to.
    memory_budget_bytes
        Memory the loaded models may take (measured at load); None for no limit.
    overcommit
        Multiplier on the budget (see `ModelPool`).
    poll_interval_s
        How often the registry is polled for alias moves once `start` ran.
    metrics_registry
        Where the pool's and the repository's Prometheus metrics go (one repository per
        registry: the series are registered once); None for none.

    Raises
    ------
    ConfigError
        For an invalid alias, a non-positive poll interval or budget, an overcommit < 1.

    Notes
    -----
    Until `start` runs, a name's alias is read from the registry on its first request and
    kept: only a started repository follows alias moves.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        names: Sequence[str] | None = None,
        alias: str = DEFAULT_ALIAS,
        memory_budget_bytes: int | None = None,
        overcommit: float = 1.0,
        poll_interval_s: float = 1.0,
        metrics_registry: prometheus_client.CollectorRegistry | None = None,
    ) -> None:
        if not ALIAS_PATTERN.fullmatch(alias):
            raise ConfigError(
                f"Invalid alias '{alias}' to serve: aliases start with a letter and use "
                "letters, digits, '_' and '-' (like champion)."
            )
        if not poll_interval_s > 0:
            raise ConfigError(
                f"Invalid poll interval {poll_interval_s}s: give a positive number of seconds."
            )
        self.registry = registry
        self.names = frozenset(names) if names is not None else None
        self.alias = alias
        self.pool: ModelPool[_Key, ServedRelease] = ModelPool(
            budget_bytes=memory_budget_bytes,
            overcommit=overcommit,
            metrics_registry=metrics_registry,
            label=_label,
        )
        self._targets: dict[str, int] = {}  # name -> version its alias serves
        self._desired: dict[str, int] = {}  # what the registry says, while a swap runs
        self._swaps: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[_Key, tuple[str, float]] = {}  # reason, monotonic time
        self._explicit: set[_Key] = set()  # versions asked for by number
        self._unloaded: set[str] = set()
        # What each warm-up showed, for metadata: never the model, which the budget governs.
        self._described: dict[_Key, _Described] = {}
        self._watcher: AliasWatcher | None = None
        self._preload: asyncio.Task[None] | None = None
        self._queued: set[_Key] = set()  # waiting for their preload
        self._poll_interval_s = poll_interval_s
        self._swap_counter = _swap_counter(metrics_registry)
        self.rollouts = ServedRollouts(
            registry,
            alias=alias,
            names=self.names,
            load=self._load_version,
            peek=self._peek_version,
            drop=self._drop_version,
        )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Read the aliases, preload what fits the budget, and follow alias moves.

        Call it inside the running event loop; preloading continues in the background
        (`index` shows those models as LOADING, a request for one waits for its load).
        """
        if self._watcher is not None:
            return
        self._watcher = AliasWatcher(
            self.registry, interval_s=self._poll_interval_s, on_tick=self._on_tick
        )
        await self._watcher.start()
        targets = await self._read_targets()
        self._targets.update(targets)
        self._desired.update(targets)
        self._queued = set(targets.items())
        self._preload = asyncio.create_task(self._preload_all(), name="headrace-preload")

    async def stop(self) -> None:
        """Stop following aliases and drop every loaded model."""
        tasks = [t for t in (self._preload, *self._swaps.values()) if t is not None]
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.rollouts.stop()
        self._preload = None
        self._queued.clear()
        self._swaps.clear()
        self.pool.clear()

    # -- serving --------------------------------------------------------------------

    async def get(self, name: str, version: str | None = None) -> InferenceService:
        """The inference service for `name` (its alias) or `name` version `version`.

        Loads and warms the release if it is not loaded; concurrent callers share one
        load.

        Raises
        ------
        UnknownModelError
            When the name is not served or the version does not exist.
        ModelUnavailableError
            When the release cannot be loaded (the message says why), or was unloaded.
        """
        key = self._key(name, version)
        if key is None:
            key = (name, await self._resolve(name))
        served = self.pool.peek(key)
        if served is not None:
            return served.service
        if name in self._unloaded:
            raise ModelUnavailableError(
                f"Model '{name}' was unloaded through the repository API: load it again "
                f"(POST /v2/repository/models/{name}/load) to serve it."
            )
        served = await self._load(key, cold=True)
        if version is not None:
            self._explicit.add(key)  # kept when its alias moves away from it
        return served.service

    def routing(self, name: str, baseline: InferenceService) -> Routing | None:
        """The releases sharing the traffic of `name`'s alias, `baseline` answering it
        now; None outside a rollout (see `ServedRollouts.routing`)."""
        return self.rollouts.routing(name, baseline)

    def is_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the release is loaded and warmed up (never loads nor raises)."""
        try:
            key = self._key(name, version)
        except HeadraceError:
            return False
        return key is not None and key in self.pool and name not in self._unloaded

    def index(self) -> list[ModelStatus]:
        """Every release the repository knows of, with its state, by name and version."""
        keys: set[_Key] = {(n, v) for n, v in self._targets.items()}
        keys.update((n, v) for n, v in self._desired.items())
        keys.update(e.key for e in self.pool.entries())
        keys.update(self.pool.loading())
        keys.update(self._failures)
        loading = set(self.pool.loading())
        return [self._status(key, loading) for key in sorted(keys)]

    def _status(self, key: _Key, loading: set[_Key]) -> ModelStatus:
        name, version = key
        if name in self._unloaded:
            return ModelStatus(name, str(version), "UNAVAILABLE", "unloaded")
        if key in self.pool:
            return ModelStatus(name, str(version), "READY", "")
        if key in loading:
            return ModelStatus(name, str(version), "LOADING", "")
        if key in self._queued:
            return ModelStatus(name, str(version), "LOADING", "queued for preloading")
        failure = self._failures.get(key)
        if failure is not None:
            return ModelStatus(name, str(version), "UNAVAILABLE", failure[0])
        return ModelStatus(name, str(version), "UNAVAILABLE", "not loaded; loads on request")

    async def load(self, name: str) -> None:
        """Load and warm the release `name` serves (the protocol's repository load)."""
        self._unloaded.discard(name)
        key = self._key(name, None) or (name, await self._resolve(name))
        self._failures.pop(key, None)
        await self._load(key, cold=False)

    async def unload(self, name: str) -> None:
        """Drop every loaded release of `name`; requests fail until `load` is called."""
        self._check_name(name)
        self._unloaded.add(name)
        for key in [e.key for e in self.pool.entries() if e.key[0] == name]:
            self.pool.discard(key)

    def metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        """Inputs, outputs, versions and platform of a model (reads the registry)."""
        key = self._key(name, version)
        if key is None:
            key = (name, self._resolve_sync(name))
        described = self._described.get(key)
        release = described.release if described is not None else self._release(key)
        manifest = release.manifest
        inputs = [
            TensorMetadata(f.name, _FIELD_DATATYPES[f.type], (-1,)) for f in manifest.schema.fields
        ]
        outputs = [
            TensorMetadata(OUTPUT_PREDICTION, _prediction_datatype(described, release), (-1,))
        ]
        if described is not None and described.has_scores:
            outputs.append(TensorMetadata(OUTPUT_SCORE, "FP64", (-1,)))
        if described is not None and described.classes is not None:
            # opt-in: answered only when a request names it in its outputs
            shape = (-1, len(described.classes))
            outputs.append(TensorMetadata(OUTPUT_PROBABILITIES, "FP64", shape))
        versions = [str(r.version) for r in self.registry.list_releases(name)]
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=manifest.model.flavor,
            inputs=inputs,
            outputs=outputs,
            version=str(key[1]),
        )

    # -- names, versions, aliases ---------------------------------------------------

    def _check_name(self, name: str) -> None:
        if self.names is not None and name not in self.names:
            # Neither the served names nor the registry's: a client learns only about the
            # name it asked for (the repository index lists models, behind its token).
            raise UnknownModelError(
                f"Model '{_shown(name)}' is not served here: check the name, or list the "
                "served models with POST /v2/repository/index."
            )

    def _key(self, name: str, version: str | None) -> _Key | None:
        """The release key, or None when the alias target must be read from the registry."""
        self._check_name(name)
        if version is None:
            target = self._targets.get(name)
            return None if target is None else (name, target)
        if not _VERSION.fullmatch(version):
            raise UnknownModelError(
                f"Version '{version}' of model '{name}' does not exist: versions are "
                f"numbers; run `headrace releases list {name}`."
            )
        return (name, int(version))

    async def _resolve(self, name: str) -> int:
        return await asyncio.to_thread(self._resolve_sync, name)

    def _resolve_sync(self, name: str) -> int:
        """The version `name`'s alias points at, read from the registry (and kept)."""
        version = self.registry.aliases(name).get(self.alias)
        if version is None:
            raise self._unknown(name)
        self._targets.setdefault(name, version)
        return self._targets[name]

    def _unknown(self, name: str) -> UnknownModelError:
        # Clients read these: no registry location (a file path, a database host and
        # user) and no list of the registry's models.
        if self.registry.list_releases(name):
            return UnknownModelError(
                f"Model '{name}' has no '{self.alias}' release: set one with "
                f"`headrace alias set {name} {self.alias} VERSION`, or ask for a version."
            )
        return UnknownModelError(
            f"Model '{_shown(name)}' not found: check the name (`headrace releases list` "
            "lists the registry's models)."
        )

    def _release(self, key: _Key) -> Release:
        name, version = key
        try:
            return self.registry.get(ReleaseRef(name, version=version))
        except ReleaseNotFoundError as exc:
            raise UnknownModelError(
                f"Version '{version}' of model '{name}' does not exist. Run "
                f"`headrace releases list {name}`."
            ) from exc

    # -- loading --------------------------------------------------------------------

    async def _load(self, key: _Key, *, cold: bool) -> ServedRelease:
        failure = self._failures.get(key)
        if failure is not None and time.monotonic() - failure[1] < RETRY_FAILED_S:
            raise ModelUnavailableError(failure[0])
        try:
            staged = _StagedLoad(self, key)
            served = await self.pool.aget(key, staged.load, cold=cold, prepare=staged.prepare)
        except UnknownModelError:
            raise
        except Exception as exc:
            _log.warning("Model '%s' could not be loaded: %s", _label(key), exc)
            # Clients read the reason (503, the repository index): no file paths in it.
            reason = f"Model '{_label(key)}' could not be loaded: {_scrub_paths(str(exc))}"
            self._failures[key] = (reason, time.monotonic())
            raise ModelUnavailableError(reason) from exc
        self._failures.pop(key, None)
        self._described[key] = _Described(
            served.release,
            oip_datatype(served.prediction_dtype),
            served.has_scores,
            served.classes,
        )
        return served

    def _load_sync(self, key: _Key, release: Release, prepared: PreparedRelease) -> ServedRelease:
        started = time.perf_counter()
        served = load_release(self.registry, release, prepared=prepared)
        _log.info(
            "loaded %s (%s) in %.2fs, warm-up %d rows in %.1f ms",
            _label(key),
            served.release.manifest.model.flavor,
            time.perf_counter() - started,
            served.warmup_rows,
            served.warmup_seconds * 1000,
        )
        return served

    async def _preload_all(self) -> None:
        """Load and warm every alias target, in name order, while the budget has room."""
        try:
            for key in sorted(self._queued):
                if self._targets.get(key[0]) != key[1]:
                    continue  # its alias moved meanwhile: the swap loads the new target
                sizes = [e.footprint_bytes for e in self.pool.entries()]
                if not self.pool.has_room(sum(sizes) // len(sizes) if sizes else 0):
                    break  # preloading must not evict what it preloaded
                try:
                    await self._load(key, cold=False)
                except HeadraceError as exc:
                    _log.error("preloading %s failed: %s", _label(key), exc)
                finally:
                    self._queued.discard(key)
        finally:
            self._queued.clear()  # the rest loads on request

    # -- hot swap -------------------------------------------------------------------

    async def _read_targets(self) -> dict[str, int]:
        targets = await asyncio.to_thread(self.registry.alias_targets, self.alias)
        if self.names is not None:
            targets = {n: v for n, v in targets.items() if n in self.names}
        return targets

    async def _on_tick(self, changed: bool) -> None:
        """Called by the watcher each poll: start a swap for every name whose alias moved
        (or whose last swap failed long enough ago)."""
        if changed:
            self._desired = await self._read_targets()
        now = time.monotonic()
        for name, version in self._desired.items():
            if self._targets.get(name) == version or name in self._swaps:
                continue
            failure = self._failures.get((name, version))
            if failure is not None and now - failure[1] < RETRY_FAILED_S:
                continue
            task = asyncio.create_task(self._swap(name, version), name=f"headrace-swap-{name}")
            self._swaps[name] = task
        await self.rollouts.tick(aliases_moved=changed)

    # -- rollout candidates (see ServedRollouts) ------------------------------------

    async def _load_version(self, name: str, version: int) -> InferenceService:
        """Load and warm a rollout's candidate as an alias swap warms its target."""
        served = await self._load((name, version), cold=False)
        return served.service

    def _peek_version(self, name: str, version: int) -> InferenceService | None:
        served = self.pool.peek((name, version))
        return None if served is None else served.service

    def _drop_version(self, name: str, version: int) -> None:
        """Free a candidate that left routing, unless the alias serves it now (a
        promotion) or a client asked for it by number."""
        key: _Key = (name, version)
        if version in (self._targets.get(name), self._desired.get(name)):
            return
        if key not in self._explicit:
            self.pool.discard(key)

    async def _swap(self, name: str, version: int) -> None:
        key: _Key = (name, version)
        old = self._targets.get(name)
        old_key = None if old is None else (name, old)
        try:
            # Warm the new release first when the old one is serving (or there is room):
            # the switch below then never makes a request wait for a load.
            if name not in self._unloaded and (
                (old_key is not None and old_key in self.pool) or self.pool.has_room()
            ):
                try:
                    await self._load(key, cold=False)
                except HeadraceError as exc:
                    self._count_swap("failed")
                    _log.error(
                        "alias %s@%s moved to version %s, which cannot be served (%s); "
                        "still serving version %s",
                        name,
                        self.alias,
                        key[1],
                        exc,
                        old,
                    )
                    return
            # The switch: one assignment on the event loop thread. Requests that already
            # hold the old service finish on it.
            self._targets[name] = key[1]
            self._count_swap("ok")
            _log.info("%s@%s now serves version %s (was %s)", name, self.alias, key[1], old)
            if old_key is not None and old_key != key and old_key not in self._explicit:
                self.pool.discard(old_key)
        finally:
            self._swaps.pop(name, None)

    def _count_swap(self, outcome: str) -> None:
        if self._swap_counter is not None:
            self._swap_counter.labels(outcome).inc()


def _label(key: _Key) -> str:
    return f"{key[0]}:{key[1]}"


class _StagedLoad:
    """One release's load as the pool runs it: `prepare` (unmeasured: find the release,
    fetch it, import its libraries), then `load` (measured)."""

    __slots__ = ("_key", "_prepared", "_release", "_repository")

    def __init__(self, repository: ModelRepository, key: _Key) -> None:
        self._repository = repository
        self._key = key
        self._release: Release | None = None
        self._prepared: PreparedRelease | None = None

    def prepare(self) -> None:
        self._release = self._repository._release(self._key)
        self._prepared = prepare_release(self._repository.registry, self._release)

    def load(self) -> ServedRelease:
        if self._release is None or self._prepared is None:
            self.prepare()  # a pool that does not call prepare still loads
        if self._release is None or self._prepared is None:  # pragma: no cover
            raise RuntimeError("prepare did not set the release")
        return self._repository._load_sync(self._key, self._release, self._prepared)


@dataclass(frozen=True, slots=True)
class _Described:
    """What a load showed about a release's outputs."""

    release: Release
    prediction_datatype: str | None
    has_scores: bool | None
    classes: tuple[str, ...] | None = None


def _prediction_datatype(described: _Described | None, release: Release) -> str:
    """What the warm-up produced, else what the release config implies."""
    if described is not None and described.prediction_datatype is not None:
        return described.prediction_datatype
    config = release.manifest.config
    if config.labels:
        return "BYTES"
    return "FP64" if config.task == "regression" else "BYTES"


def _swap_counter(
    registry: prometheus_client.CollectorRegistry | None,
) -> prometheus_client.Counter | None:
    if registry is None:
        return None
    from prometheus_client import Counter

    return Counter(
        "headrace_model_swaps",
        "Alias moves followed by the server, by outcome (ok, failed: old release kept).",
        ["outcome"],
        registry=registry,
    )
