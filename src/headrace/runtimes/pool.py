"""A memory-budgeted pool of loaded models: measured footprints, LRU eviction, one load per key.

Many models share one process. Each load is measured (see `measure_footprint`), admitted if
the pool's resident total stays within ``budget x overcommit``, and the least recently used
models are evicted to make room when it would not. A request for an evicted model loads it
again. Concurrent requests for a model that is loading wait for that one load, whether they
come from threads (`ModelPool.get`) or asyncio tasks (`ModelPool.aget`, which loads in a
worker thread so the event loop keeps serving).

The pool is generic over what it holds so that it knows nothing of releases or services:
the caller passes a key and a function that loads the value.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from headrace.errors import ConfigError, ModelLoadError
from headrace.runtimes.footprint import _MEASURING, measure_footprint

if TYPE_CHECKING:
    import prometheus_client

__all__ = ["ModelPool", "PoolEntry"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolEntry(Generic[K]):
    """A model resident in the pool.

    Attributes
    ----------
    key
        What the caller named it by.
    footprint_bytes
        Memory measured while it loaded.
    load_seconds
        How long its load took.
    loaded_at, last_used
        `time.monotonic` when it was admitted and when it was last handed out.
    """

    key: K
    footprint_bytes: int
    load_seconds: float
    loaded_at: float
    last_used: float


@dataclass(slots=True)
class _Slot(Generic[V]):
    value: V
    footprint: int
    load_seconds: float
    loaded_at: float
    last_used: float


class _Metrics:
    """The pool's Prometheus series (prometheus-client is imported only when asked for)."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        try:
            from prometheus_client import Counter, Gauge, Histogram
        except ImportError as exc:  # pragma: no cover - the server extra brings it
            from headrace.errors import DependencyMissingError

            raise DependencyMissingError(
                "prometheus_client", "server", "model pool metrics"
            ) from exc
        self.models = Gauge(
            "headrace_pool_models", "Models resident in the pool.", registry=registry
        )
        self.memory = Gauge(
            "headrace_pool_memory_bytes",
            "Measured memory of the models resident in the pool.",
            registry=registry,
        )
        self.capacity = Gauge(
            "headrace_pool_capacity_bytes",
            "What the pool may hold: memory budget times overcommit (absent: unbounded).",
            registry=registry,
        )
        self.model_memory = Gauge(
            "headrace_pool_model_memory_bytes",
            "Measured memory of one resident model.",
            ["model"],
            registry=registry,
        )
        self.load_seconds = Histogram(
            "headrace_pool_load_seconds",
            "Time to load (and warm up) a model.",
            ["outcome"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.evictions = Counter(
            "headrace_pool_evictions",
            "Models evicted to make room under the memory budget.",
            registry=registry,
        )
        self.cold_loads = Counter(
            "headrace_pool_cold_loads",
            "Loads a request had to wait for (not a preload or a hot swap).",
            registry=registry,
        )


class ModelPool(Generic[K, V]):
    """Loaded models under a memory budget, least recently used evicted first.

    Parameters
    ----------
    budget_bytes
        Memory the models may take; None for no limit (nothing is ever evicted).
    overcommit
        Multiplier on the budget: 1.5 admits models up to 150% of it, for footprints that
        overstate what stays resident (pages shared with other models, lazily touched).
    metrics_registry
        Where to register the pool's Prometheus metrics; None for none.
    label
        The metric label of a key (default `str`).
    measure
        How a load is measured: called with the load function, returns the value and its
        footprint in bytes. The default is `measure_footprint`.

    Raises
    ------
    ConfigError
        When the budget is not positive or the overcommit is below 1.
    """

    def __init__(
        self,
        *,
        budget_bytes: int | None = None,
        overcommit: float = 1.0,
        metrics_registry: prometheus_client.CollectorRegistry | None = None,
        label: Callable[[K], str] = str,
        measure: Callable[[Callable[[], V]], tuple[V, int]] | None = None,
    ) -> None:
        if budget_bytes is not None and budget_bytes <= 0:
            raise ConfigError(
                f"Invalid memory budget {budget_bytes} bytes: give a positive number of "
                "bytes, or no budget for an unbounded pool."
            )
        if not overcommit >= 1.0:  # also refuses NaN
            raise ConfigError(
                f"Invalid overcommit ratio {overcommit}: it multiplies the memory budget and "
                "must be >= 1 (1 admits exactly the budget)."
            )
        self.budget_bytes = budget_bytes
        self.overcommit = overcommit
        self._label = label
        self._measure: Callable[[Callable[[], V]], tuple[V, int]] = (
            measure if measure is not None else measure_footprint
        )
        self._lock = threading.Lock()
        self._slots: OrderedDict[K, _Slot[V]] = OrderedDict()  # least recently used first
        self._loading: dict[K, Future[V]] = {}
        self._footprints: dict[K, int] = {}  # the largest measured per key
        self._graveyard: list[V] = []  # dropped while a load was being measured
        self._used = 0
        self.evictions = 0
        self.cold_loads = 0
        self._metrics = _Metrics(metrics_registry) if metrics_registry is not None else None
        if self._metrics is not None and self.capacity_bytes is not None:
            self._metrics.capacity.set(self.capacity_bytes)

    # -- what is in the pool ------------------------------------------------------------

    @property
    def capacity_bytes(self) -> int | None:
        """``budget x overcommit``, or None when unbounded."""
        if self.budget_bytes is None:
            return None
        return int(self.budget_bytes * self.overcommit)

    @property
    def used_bytes(self) -> int:
        """The summed footprint of the resident models."""
        return self._used

    def entries(self) -> list[PoolEntry[K]]:
        """The resident models, least recently used first."""
        with self._lock:
            return [
                PoolEntry(k, s.footprint, s.load_seconds, s.loaded_at, s.last_used)
                for k, s in self._slots.items()
            ]

    def loading(self) -> list[K]:
        """Keys whose load is under way."""
        with self._lock:
            return list(self._loading)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._slots

    def peek(self, key: K) -> V | None:
        """The resident value (marked as just used), or None without loading anything."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return None
            slot.last_used = time.monotonic()
            self._slots.move_to_end(key)
            return slot.value

    def has_room(self, size: int = 0) -> bool:
        """Whether `size` more bytes fit without evicting anything (with the default 0:
        whether the pool is below capacity)."""
        capacity = self.capacity_bytes
        if capacity is None:
            return True
        return self._used + size <= capacity if size else self._used < capacity

    # -- loading ------------------------------------------------------------------------

    def get(
        self,
        key: K,
        load: Callable[[], V],
        *,
        cold: bool = True,
        prepare: Callable[[], object] | None = None,
    ) -> V:
        """The value for `key`, loading it with `load` in this thread if it is not resident.

        Threads asking for a key that is loading wait for that load and share its result
        (or its exception).

        Parameters
        ----------
        cold
            This load makes a request wait (counted as a cold load); False for preloads
            and hot swaps.
        prepare
            Run just before the measured load, one at a time with measured loads but not
            measured itself: for one-time costs of the process that the load would
            otherwise be charged for (importing the model's library, see
            `headrace.runtimes.import_runtime`). Its exceptions fail the load.

        Raises
        ------
        Exception
            Whatever `load` raised; `ModelLoadError` when the measured model alone does
            not fit the pool's capacity.
        """
        value = self.peek(key)
        if value is not None:
            return value
        future, owner = self._claim(key)
        if owner:
            self._fill(key, load, future, cold, prepare)
        return future.result()

    async def aget(
        self,
        key: K,
        load: Callable[[], V],
        *,
        cold: bool = True,
        prepare: Callable[[], object] | None = None,
    ) -> V:
        """Like `get`, for asyncio: `prepare` and the load run in a worker thread, waiters
        await it.

        A cancelled caller does not cancel the load: its waiters still get the result.
        """
        value = self.peek(key)
        if value is not None:
            return value
        future, owner = self._claim(key)
        if owner:
            await asyncio.to_thread(self._fill, key, load, future, cold, prepare)
            return future.result()
        return await asyncio.wrap_future(future)

    def discard(self, key: K) -> bool:
        """Drop a resident model (callers holding it keep a working reference).

        Returns whether it was resident.
        """
        with self._lock:
            slot = self._slots.pop(key, None)
            if slot is None:
                return False
            self._used -= slot.footprint
        self._forget_metrics(key)
        self._drop([slot.value])
        return True

    def clear(self) -> None:
        """Drop every resident model."""
        with self._lock:
            keys = list(self._slots)
        for key in keys:
            self.discard(key)

    def _claim(self, key: K) -> tuple[Future[V], bool]:
        """The future of the load of `key`, and whether this caller must run it."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:  # admitted since the peek
                done: Future[V] = Future()
                done.set_result(slot.value)
                return done, False
            future = self._loading.get(key)
            if future is not None:
                return future, False
            future = Future()
            # RUNNING, so a waiter that gives up (asyncio cancellation) cannot cancel it.
            future.set_running_or_notify_cancel()
            self._loading[key] = future
            return future, True

    def _drop(self, values: list[V]) -> None:
        """Let go of evicted values, unless a load is being measured right now: freeing
        them then would shrink that load's footprint; the next load frees them first."""
        if _MEASURING.acquire(blocking=False):
            try:
                values.clear()
            finally:
                _MEASURING.release()
        else:
            with self._lock:
                self._graveyard.extend(values)

    def _bury(self) -> None:
        with self._lock:
            dead, self._graveyard = self._graveyard, []
        dead.clear()

    def _fill(
        self,
        key: K,
        load: Callable[[], V],
        future: Future[V],
        cold: bool,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        """Prepare, run the load, admit its value, settle the future; never raises."""
        started = time.monotonic()
        try:
            with _MEASURING:  # the evictions below free memory outside any measurement
                self._bury()
                if prepare is not None:
                    # Under the lock: what it allocates must not land in another load's
                    # measurement either.
                    prepare()
                value, footprint = self._measure(load)
                seconds = time.monotonic() - started
                self._admit(key, value, footprint, seconds)
            self._bury()
        except BaseException as exc:
            with self._lock:
                self._loading.pop(key, None)
            if self._metrics is not None:
                self._metrics.load_seconds.labels("error").observe(time.monotonic() - started)
            future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if cold:
            self.cold_loads += 1
        if self._metrics is not None:
            self._metrics.load_seconds.labels("ok").observe(seconds)
            if cold:
                self._metrics.cold_loads.inc()
        future.set_result(value)

    def _admit(self, key: K, value: V, footprint: int, seconds: float) -> None:
        capacity = self.capacity_bytes
        if capacity is not None and footprint > capacity:
            raise ModelLoadError(
                f"Model '{self._label(key)}' takes {_mb(footprint)} (measured while loading), "
                f"more than the whole pool may hold ({_mb(capacity)} = budget "
                f"{_mb(self.budget_bytes or 0)} x overcommit {self.overcommit:g}). Raise the "
                "memory budget or the overcommit ratio."
            )
        evicted: list[tuple[K, _Slot[V]]] = []
        now = time.monotonic()
        with self._lock:
            # A model freed elsewhere during its load measures smaller than it is; what
            # it measured before is the better guess.
            footprint = max(footprint, self._footprints.get(key, 0))
            self._footprints[key] = footprint
            self._loading.pop(key, None)
            old = self._slots.pop(key, None)
            if old is not None:
                self._used -= old.footprint
            while capacity is not None and self._slots and self._used + footprint > capacity:
                victim, slot = self._slots.popitem(last=False)
                self._used -= slot.footprint
                evicted.append((victim, slot))
            self._slots[key] = _Slot(value, footprint, seconds, now, now)
            self._used += footprint
            self.evictions += len(evicted)
            used = self._used
            count = len(self._slots)
        for victim, slot in evicted:
            _log.info(
                "evicted model %s (%s) to admit %s (%s) under the memory budget",
                self._label(victim),
                _mb(slot.footprint),
                self._label(key),
                _mb(footprint),
            )
            self._forget_metrics(victim)
        n_evicted = len(evicted)
        evicted.clear()  # freed here, inside the caller's measurement lock
        if self._metrics is not None:
            self._metrics.evictions.inc(n_evicted)
            self._metrics.model_memory.labels(self._label(key)).set(footprint)
            self._metrics.memory.set(used)
            self._metrics.models.set(count)

    def _forget_metrics(self, key: K) -> None:
        if self._metrics is None:
            return
        try:
            self._metrics.model_memory.remove(self._label(key))
        except KeyError:
            pass
        with self._lock:
            used, count = self._used, len(self._slots)
        self._metrics.memory.set(used)
        self._metrics.models.set(count)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
