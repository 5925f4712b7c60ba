"""Taking part in a rollout: write this process's evidence, and decide while holding the lease.

Every worker and server that routes traffic during a rollout keeps running totals of what
each arm showed (`StepEvidence`, per rollout step) and writes them to the registry every
`interval_s`, one row per process and step (an upsert, so a rewrite never double counts).
Then it tries to take the rollout's lease: the one process holding it (until it stops
renewing, `lease_ttl_s`) sums every process's rows, asks the judge, and records the
verdict; the registry refuses a verdict from a holder whose lease was taken over (a fencing
epoch), so two processes never decide. No controller runs apart from the workers and
servers: a rollout advances as long as one of them does.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from headrace._redact import redact_text
from headrace.errors import RolloutLeaseLostError
from headrace.registry.store import Registry
from headrace.rollout.evidence import StepEvidence
from headrace.rollout.plan import RolloutPlan
from headrace.rollout.state import plan_of, read_evidence

__all__ = ["RolloutParticipant", "instance_name"]

log = logging.getLogger("headrace.rollout")


def instance_name(kind: str) -> str:
    """A name for this process in the evidence and lease rows: kind, host, pid, a nonce."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RolloutParticipant:
    """Collects this process's per-arm evidence and judges rollouts when it holds a lease.

    Parameters
    ----------
    registry
        Where evidence, leases and verdicts live.
    instance
        This process's name (`instance_name`).
    interval_s
        Seconds between writes of the evidence (and looks of the judge).
    lease_ttl_s
        How long a lease lasts without renewal; a holder that stops renewing (killed,
        stalled) is replaced after it.
    decide
        Whether this process may judge at all (a read-only replica may only report).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        instance: str,
        interval_s: float = 1.0,
        lease_ttl_s: float = 10.0,
        decide: bool = True,
    ) -> None:
        self.registry = registry
        self.instance = instance
        self.interval_s = interval_s
        self.lease_ttl_s = lease_ttl_s
        self.may_decide = decide
        self.verdicts = 0
        self.failing = False
        self._lock = threading.Lock()
        self._totals: dict[tuple[int, int], StepEvidence] = {}
        self._dirty: set[tuple[int, int]] = set()
        self._leases: dict[int, int] = {}  # rollout id -> the epoch this process holds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- evidence ---------------------------------------------------------------------

    def record(self, rollout_id: int, step: int, evidence: StepEvidence) -> None:
        """Add one batch's (or request's) evidence to this process's running totals."""
        key = (rollout_id, step)
        with self._lock:
            totals = self._totals.get(key)
            if totals is None:
                totals = self._totals[key] = StepEvidence()
            totals.add(evidence)
            self._dirty.add(key)

    def totals(self, rollout_id: int, step: int) -> StepEvidence:
        """This process's totals for one step (a copy)."""
        with self._lock:
            return self._snapshot((rollout_id, step))

    def flush(self) -> None:
        """Write the totals that changed since the last flush (one upsert per step)."""
        with self._lock:
            dirty = [(key, self._snapshot(key)) for key in sorted(self._dirty)]
            self._dirty.clear()
        for k, ((rollout_id, step), evidence) in enumerate(dirty):
            try:
                self.registry.write_evidence(
                    rollout_id, instance=self.instance, step=step, evidence=evidence
                )
            except Exception:
                with self._lock:  # written again at the next flush: totals, not increments
                    self._dirty.update(key for key, _ in dirty[k:])
                raise

    def _snapshot(self, key: tuple[int, int]) -> StepEvidence:
        """A copy of one step's totals (empty when nothing was recorded); under the lock."""
        copy = StepEvidence()
        totals = self._totals.get(key)
        if totals is not None:
            copy.add(totals)
        return copy

    # -- deciding ---------------------------------------------------------------------

    def tick(self) -> None:
        """Flush the evidence, then judge each running rollout whose lease this holds."""
        self.flush()
        if not self.may_decide:
            return
        for state in self.registry.active_rollouts():
            epoch = self.registry.acquire_lease(
                state.id, holder=self.instance, ttl_s=self.lease_ttl_s
            )
            if epoch is None:
                self._leases.pop(state.id, None)
                continue
            self._leases[state.id] = epoch
            self._judge(state.id, plan_of(state), state.step, epoch=epoch)

    def _judge(self, rollout_id: int, plan: RolloutPlan, step: int, *, epoch: int) -> None:
        from headrace.rollout.judge import judge

        steps = read_evidence(self.registry, rollout_id)[: step + 1]
        while len(steps) < step + 1:
            steps.append(StepEvidence())
        verdict = judge(plan, steps, step=step)
        decision = verdict.decision
        next_step: int | None = None
        end_state: str | None = None
        champion: int | None = None
        if decision == "next_step":
            next_step = step + 1
        elif decision == "promote":
            end_state, champion = "promoted", plan.candidate
        elif decision == "rollback":
            end_state, champion = "rolled_back", plan.baseline
        try:
            self.registry.decide(
                rollout_id,
                holder=self.instance,
                epoch=epoch,
                step=step,
                decision=decision,
                reason=verdict.reason,
                evidence=verdict.evidence,
                next_step=next_step,
                end_state=end_state,
                move_champion_to=champion,
            )
        except RolloutLeaseLostError:
            # Another process took the lease over (this one stalled past its expiry) or
            # the rollout ended meanwhile: its verdict stands, this one is dropped.
            log.info("rollout %d: lease lost before deciding; the new holder decides", rollout_id)
            return
        self.verdicts += 1
        if decision != "continue":
            log.warning("rollout of %s: %s (%s)", plan.name, decision, verdict.reason)

    # -- background -------------------------------------------------------------------

    def start(self) -> None:
        """Flush and judge every `interval_s` in a daemon thread until `stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="headrace-rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then write the last totals (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(self.interval_s * 2, 5.0))
            self._thread = None
        try:
            self.flush()
        except Exception as exc:
            log.warning("could not write the last rollout evidence: %s", redact_text(str(exc)))
        self._release_leases()

    def _release_leases(self) -> None:
        """Give up the leases held, so another process decides at once instead of after
        `lease_ttl_s` (best effort: an unreleased lease still lapses)."""
        for rollout_id, epoch in list(self._leases.items()):
            try:
                self.registry.release_lease(rollout_id, holder=self.instance, epoch=epoch)
            except Exception as exc:
                log.info("could not release the lease of rollout %d: %s", rollout_id, exc)
        self._leases.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception as exc:
                if not self.failing:
                    log.warning(
                        "rollout evidence and decisions paused: %s",
                        redact_text(str(exc).strip()),
                    )
                self.failing = True
            else:
                if self.failing:
                    log.warning("rollout evidence and decisions resumed")
                self.failing = False
