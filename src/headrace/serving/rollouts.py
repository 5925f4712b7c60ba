"""A server's side of a rollout: which served names run one, and what each arm showed.

The repository calls `ServedRollouts.tick` on every tick of its alias watcher. A tick reads
`Registry.rollout_revision` (one cheap query) and, when it moved or an alias moved, the
running rollouts; it loads and warms each served name's candidate through the same pool
path as an alias swap, and only then lets it take traffic. `ServedRollouts.routing` turns
that into a `Routing` per request: the baseline is whatever the alias serves at that
moment, so a promotion (S's decide moves ``champion``) is just an alias swap, and a
rollback or an abort drops the candidate from routing at the next tick.

A rollout applies only when the server serves ``champion`` (the rollout's baseline is the
release ``champion`` pointed at) and only while the alias still points at the baseline: a
hand-moved champion serves alone, as in the stream worker's `ReleaseFollower`.

`EvidenceTally` gathers each answered request's per-arm counts, latencies and scores at
the cost of a few appends, and hands them to the rollout participant as sufficient
statistics (`StepEvidence`, built vectorized) a few times a second: a histogram per
request would cost more than a small model's call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from headrace._redact import redact_text
from headrace.inference.service import InferenceService
from headrace.registry.refs import DEFAULT_ALIAS
from headrace.registry.store import Registry
from headrace.rollout.evidence import PairEvidence, StepEvidence
from headrace.rollout.plan import RolloutPlan
from headrace.rollout.routing import Arm, Routing, candidate_mask
from headrace.rollout.state import plan_of
from headrace.serving.batching import BatchPart

__all__ = [
    "ArmObserver",
    "EvidenceTally",
    "ServedRollouts",
    "assign_arm",
    "model_ms",
    "predicted_rows",
]

_log = logging.getLogger(__name__)


class ArmObserver(Protocol):
    """Receives what one request showed on one arm (the data plane's evidence sink)."""

    def __call__(
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
        """Count `rows` (`errors` of them failed by the arm's model), one model latency
        and the scores; in shadow, the pairs both arms predicted."""


LoadVersion = Callable[[str, int], Awaitable[InferenceService]]
PeekVersion = Callable[[str, int], InferenceService | None]
DropVersion = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class _Running:
    """A served name's running rollout whose candidate is loaded and warm."""

    rollout_id: int
    plan: RolloutPlan
    step: int


class ServedRollouts:
    """Each served name's running rollout, followed on the repository's watcher ticks.

    Parameters
    ----------
    registry
        Where rollouts are read.
    alias
        The alias the server serves; rollouts apply only to ``champion``.
    names
        The served names, or None for every name.
    load
        Loads and warms ``(name, version)`` through the repository's pool (an alias
        swap's path); raises when it cannot.
    peek
        The loaded service of ``(name, version)``, or None (evicted, never loaded).
    drop
        Called with a candidate that left routing (rollback, abort): the repository
        frees it unless it is served for another reason.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        alias: str,
        names: Collection[str] | None,
        load: LoadVersion,
        peek: PeekVersion,
        drop: DropVersion,
    ) -> None:
        self.registry = registry
        self.alias = alias
        self.names = names
        self._load = load
        self._peek = peek
        self._drop = drop
        self._running: dict[str, _Running] = {}
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._revision: int | None = None
        self.failing = False  # the last tick could not read the registry
        self._warned: set[int] = set()  # rollouts whose candidate failed to load (said once)

    @property
    def running(self) -> dict[str, tuple[int, int]]:
        """Name -> (rollout id, step) of each rollout taking traffic here."""
        return {name: (r.rollout_id, r.step) for name, r in self._running.items()}

    async def tick(self, *, aliases_moved: bool) -> None:
        """Follow rollouts that started, stepped or ended since the last tick.

        Loads run as tasks (a tick never waits for one); a candidate joins routing once
        it is warm. A failed load is tried again at a later tick; so is a registry that
        cannot be read (what routes now keeps routing, and the outage is logged once).
        """
        if self.alias != DEFAULT_ALIAS:
            return
        try:
            revision = await asyncio.to_thread(self.registry.rollout_revision)
            if revision == self._revision and not aliases_moved:
                return
            states = await asyncio.to_thread(self.registry.active_rollouts)
            plans = {s.id: plan_of(s) for s in states}
        except Exception as exc:
            if not self.failing:
                _log.warning(
                    "cannot read rollouts from the registry (%s); routing stays as it is",
                    redact_text(str(exc).strip()),
                )
            self.failing = True
            return
        if self.failing:
            _log.warning("rollouts readable again; following them")
        self.failing = False
        wanted = {s.name: s for s in states if self.names is None or s.name in self.names}
        for name, running in list(self._running.items()):
            state = wanted.get(name)
            if state is None or state.id != running.rollout_id:
                del self._running[name]
                _log.info("%s: rollout %d no longer routes here", name, running.rollout_id)
                self._drop(name, running.plan.candidate)
        retry = False
        for name, state in wanted.items():
            current = self._running.get(name)
            if current is not None:
                if current.step != state.step:
                    self._running[name] = _Running(state.id, current.plan, state.step)
                    _log.info("%s: rollout %d at step %d", name, state.id, state.step)
                continue
            if name in self._loads:
                retry = True  # look again once the load is done
                continue
            self._loads[name] = asyncio.create_task(
                self._join(name, state.id, plans[state.id], state.step),
                name=f"headrace-rollout-{name}",
            )
            retry = True
        # Until every wanted candidate routes, look at the rollouts again next tick.
        self._revision = None if retry else revision

    async def _join(self, name: str, rollout_id: int, plan: RolloutPlan, step: int) -> None:
        """Load and warm the candidate, then let it take traffic."""
        try:
            await self._load(name, plan.candidate)
        except Exception as exc:
            if rollout_id not in self._warned:
                self._warned.add(rollout_id)
                _log.error(
                    "%s: rollout %d's candidate %s:%d cannot be served (%s); the baseline "
                    "keeps every request, trying again",
                    name,
                    rollout_id,
                    name,
                    plan.candidate,
                    redact_text(str(exc)),
                )
            return
        finally:
            self._loads.pop(name, None)
        self._running[name] = _Running(rollout_id, plan, step)
        _log.info(
            "%s: rollout %d routes %s:%d (%s %g%%)",
            name,
            rollout_id,
            name,
            plan.candidate,
            plan.strategy,
            plan.weight(step),
        )

    async def stop(self) -> None:
        """Cancel loads under way and forget every rollout."""
        tasks = list(self._loads.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loads.clear()
        self._running.clear()
        self._revision = None

    def routing(self, name: str, baseline: InferenceService) -> Routing | None:
        """The routing of a request for `name`'s alias answered by `baseline`, or None
        when no rollout of `name` takes traffic here (or its baseline is not served)."""
        running = self._running.get(name)
        if running is None:
            return None
        plan = running.plan
        if baseline.release != f"{name}:{plan.baseline}":
            return None  # the alias moved (a promotion in progress, a hand move)
        candidate = self._peek(name, plan.candidate)
        if candidate is None:
            # Evicted under the memory budget: the next tick loads it again.
            del self._running[name]
            self._revision = None
            return None
        return Routing(
            baseline=baseline,
            candidate=candidate,
            plan=plan,
            rollout_id=running.rollout_id,
            step=running.step,
        )


def assign_arm(routing: Routing, key: str | None) -> Arm:
    """The arm of one request: sticky by `key` (the CRC-32 bucket every worker and server
    uses), else drawn at random at the candidate's weight."""
    if routing.plan is None or routing.candidate is None:
        return "baseline"
    if key is None:
        chosen = random.random() * 100.0 < routing.weight  # noqa: S311 (a split, not a secret)
    else:
        chosen = bool(candidate_mask([key], salt=routing.plan.salt, weight=routing.weight)[0])
    return "candidate" if chosen else "baseline"


def model_ms(part: BatchPart) -> float | None:
    """The model time (ms) of the batch that answered `part`: its whole inference call
    (validation, model, post-processing), or None when the batch did not report it."""
    stages = part.stages_ns
    if len(stages) < 2:
        return None
    return (stages[-1] - stages[0]) / 1e6


def predicted_rows(part: BatchPart) -> np.ndarray:
    """The request's rows that got a prediction (the others are its rejections)."""
    rows = np.arange(part.n_rows, dtype=np.int64)
    if not part.rejections:
        return rows
    return np.setdiff1d(rows, [r.row for r in part.rejections], assume_unique=True)


@dataclass
class _ArmTally:
    events: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)


@dataclass
class _StepTally:
    plan: RolloutPlan
    baseline: _ArmTally = field(default_factory=_ArmTally)
    candidate: _ArmTally = field(default_factory=_ArmTally)
    pairs: PairEvidence = field(default_factory=PairEvidence)


class EvidenceTally:
    """Per-request evidence, gathered cheaply and handed on in batches.

    Parameters
    ----------
    record
        Receives ``(rollout_id, step, evidence)``: `RolloutParticipant.record`.
    every_s
        The longest a request's evidence waits before it is handed on (a timer on the
        event loop, started by the first request of a window).
    max_requests
        Hand on sooner once this many requests were counted.

    Every method runs on the event loop's thread (requests and shadow tasks alike).
    """

    def __init__(
        self,
        record: Callable[[int, int, StepEvidence], None],
        *,
        every_s: float = 0.25,
        max_requests: int = 1024,
    ) -> None:
        self._record = record
        self.every_s = every_s
        self.max_requests = max_requests
        self._steps: dict[tuple[int, int], _StepTally] = {}
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self,
        routing: Routing,
        arm: Arm,
        *,
        rows: int,
        errors: int,
        latency_ms: float | None,
        scores: np.ndarray | None,
        pairs: PairEvidence | None = None,
    ) -> None:
        """Count one request of `arm` under `routing` (its rollout and step)."""
        plan, rollout_id = routing.plan, routing.rollout_id
        if plan is None or rollout_id is None:
            return
        key = (rollout_id, routing.step)
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = _StepTally(plan)
        tally = step.candidate if arm == "candidate" else step.baseline
        tally.events += rows
        tally.errors += errors
        if latency_ms is not None:
            tally.latencies_ms.append(latency_ms)
        if scores is not None and len(scores) and plan.score_edges:
            tally.scores.append(scores)
        if pairs is not None:
            step.pairs.add(pairs)
        self._count += 1
        if self._count >= self.max_requests:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.every_s, self.flush)

    def flush(self) -> None:
        """Hand everything counted so far on, one `StepEvidence` per rollout step."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        steps, self._steps, self._count = self._steps, {}, 0
        for (rollout_id, step), tally in steps.items():
            evidence = StepEvidence(pairs=tally.pairs)
            for arm, side in (
                (tally.baseline, evidence.baseline),
                (tally.candidate, evidence.candidate),
            ):
                side.events, side.errors = arm.events, arm.errors
                side.record_calls(arm.latencies_ms)
                if arm.scores:
                    side.record_scores(np.concatenate(arm.scores), edges=tally.plan.score_edges)
            self._record(rollout_id, step, evidence)
