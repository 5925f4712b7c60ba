"""Keeping a running process on the releases the registry says: alias moves and rollouts.

A stream worker (or any long-running caller) holds a `ReleaseFollower` for its release
reference (``fraud@champion``). Every `interval_s` the follower reads two cheap counters
(`Registry.alias_revision`, `Registry.rollout_revision`); when either moved it resolves the
alias and the name's running rollout, loads and warms any release it does not hold yet
(through the one loader, beside the releases that keep scoring meanwhile), and publishes
a new `Routing`. The caller reads `current` once per batch, so the switch happens between
batches: a batch in flight finishes on the releases it started with and no event fails for
the swap. A registry outage or a release that fails its warm-up keeps the current routing
and is retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from headrace._redact import redact_text
from headrace.inference.loading import LoadedRelease, load_release
from headrace.registry.refs import ReleaseRef
from headrace.registry.store import Registry
from headrace.rollout.routing import Routing
from headrace.rollout.state import plan_of

__all__ = ["ReleaseFollower"]

log = logging.getLogger("headrace.rollout")

Loader = Callable[[Registry, str], LoadedRelease]


def _load(registry: Registry, ref: str) -> LoadedRelease:
    return load_release(registry, ref)


class ReleaseFollower:
    """Publishes the `Routing` for `ref`, kept current by polling the registry.

    Parameters
    ----------
    registry
        Where aliases and rollouts are read.
    ref
        The reference followed. An alias (``fraud@champion``) follows its moves and the
        name's rollouts; a pinned version (``fraud:3``) never changes.
    initial
        The release already loaded for `ref` (the caller loaded it before starting).
    interval_s
        Seconds between polls.
    load
        Loads and warms a release (``name:version``); the shared loader by default.
    on_switch
        Called (in the follower's thread) with the old and new routing after a switch.
    """

    def __init__(
        self,
        registry: Registry,
        ref: ReleaseRef,
        *,
        initial: LoadedRelease,
        interval_s: float = 1.0,
        load: Loader = _load,
        on_switch: Callable[[Routing, Routing], None] | None = None,
    ) -> None:
        self.registry = registry
        self.ref = ref
        self.interval_s = interval_s
        self.current = Routing(baseline=initial.service)
        self.switches = 0
        self.failing = False
        self._load = load
        self._on_switch = on_switch
        self._loaded: dict[int, LoadedRelease] = {initial.release.version: initial}
        self._revisions: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def follows(self) -> bool:
        """Whether `ref` can change at all (an alias, not a pinned version)."""
        return self.ref.alias is not None

    def start(self) -> None:
        """Poll in a daemon thread until `stop`."""
        if not self.follows or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"headrace-follow-{self.ref.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.interval_s * 2, 5.0))
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> bool:
        """Check the registry once; return whether the routing changed."""
        if not self.follows:
            return False
        registry = self.registry
        try:
            revisions = (registry.alias_revision(), registry.rollout_revision())
            if revisions == self._revisions:
                return False
            routing = self._resolve()
        except Exception as exc:
            # Keep scoring with what is loaded; say so once, not every interval.
            if not self.failing:
                log.warning(
                    "%s: cannot follow the registry (%s); keeping %s",
                    self.ref,
                    redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else ""),
                    self.current.describe(),
                )
            self.failing = True
            return False
        if self.failing:
            log.warning("%s: registry reachable again; following it", self.ref)
        self.failing = False
        self._revisions = revisions
        old = self.current
        if _same(old, routing):
            return False
        self.current = routing
        self.switches += 1
        log.info("%s: now scoring with %s (was %s)", self.ref, routing.describe(), old.describe())
        held = {id(routing.baseline), id(routing.candidate)}
        self._loaded = {v: r for v, r in self._loaded.items() if id(r.service) in held}
        if self._on_switch is not None:
            self._on_switch(old, routing)
        return True

    def _resolve(self) -> Routing:
        """The routing the registry asks for now, loading what it names."""
        name, alias = self.ref.name, self.ref.alias
        if alias is None:  # a pinned version never changes
            return self.current
        targets = self.registry.aliases(name)
        version = targets.get(alias)
        if version is None:
            # The alias was removed: keep scoring with what is loaded rather than stop.
            return self.current
        baseline = self._release(version)
        rollout = self.registry.rollout(name)
        if rollout is None or rollout.state != "running" or alias != "champion":
            return Routing(baseline=baseline.service)
        if rollout.baseline != version:
            # The champion moved away from the rollout's baseline by hand: the rollout
            # no longer compares what it planned to; serve the champion alone.
            return Routing(baseline=baseline.service)
        candidate = self._release(rollout.candidate)
        return Routing(
            baseline=baseline.service,
            candidate=candidate.service,
            plan=plan_of(rollout),
            rollout_id=rollout.id,
            step=rollout.step,
        )

    def _release(self, version: int) -> LoadedRelease:
        loaded = self._loaded.get(version)
        if loaded is None:
            loaded = self._load(self.registry, f"{self.ref.name}:{version}")
            self._loaded[version] = loaded
        return loaded


def _same(a: Routing, b: Routing) -> bool:
    return (
        a.baseline is b.baseline
        and a.candidate is b.candidate
        and a.rollout_id == b.rollout_id
        and a.step == b.step
        and a.plan == b.plan
    )
