"""The demo's second act: after the drift alarm, retrain, gate, shadow, canary, decide.

`RolloutStory` runs in its own thread beside the streaming worker. Once the alarm came
and the labels of enough transactions after the drift point are back, it retrains on
them (release 2, registered through the same contract check as release 1), compares the
challenger with the champion on the most recent of those labelled rows (the validation
gate), then rolls it out while the worker keeps scoring: first a shadow (the candidate
scores every event beside the champion; its outputs go to the shadow file only), then a
canary in steps of traffic weight. The story only starts and, when the stream runs out,
ends rollouts: every verdict comes from the worker itself (its rollout participant holds
the lease and asks the judge), and the story narrates each as it is stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headrace.demo.data import Transactions

if TYPE_CHECKING:
    from headrace.demo.training import GateResult, Trained
    from headrace.registry import RolloutState, VerdictRow
    from headrace.registry.store import Registry

__all__ = ["Phase", "RolloutReport", "RolloutStory", "describe_verdict", "verdict_record"]

Say = Callable[[str], None]

NAME = "fraud"


def verdict_record(row: VerdictRow, steps: tuple[float, ...]) -> dict[str, Any]:
    """A stored verdict as the demo reports it: step, weight, decision, reason, the events
    per arm it judged (``[baseline, candidate]``), who decided, when."""
    position = (row.evidence or {}).get("step") or {}
    events = position.get("events") or [0, 0]
    return {
        "at": row.at,
        "step": row.step,
        "weight": steps[min(row.step, len(steps) - 1)] if steps else 0.0,
        "decision": row.decision,
        "reason": row.reason,
        "events": [int(events[0]), int(events[1])],
        "holder": row.holder,
    }


def describe_verdict(strategy: str, verdict: dict[str, Any]) -> str:
    """One narration line for a verdict, as the demo narrates alarms (no square
    brackets: the CLI's console would read them as markup)."""
    baseline, candidate = verdict["events"]
    if verdict["decision"] not in ("continue", "next_step", "promote", "rollback"):
        # ended by hand (the demo's own abort): no judge, no evidence
        return (
            f"    {strategy.upper()} ENDED at step {verdict['step'] + 1} "
            f"({verdict['weight']:g}%): {verdict['decision']} - {verdict['reason']}"
        )
    return (
        f"    {strategy.upper()} VERDICT at step {verdict['step'] + 1} "
        f"({verdict['weight']:g}%): {verdict['decision']} - {verdict['reason']}; "
        f"events per arm: baseline {baseline:,}, candidate {candidate:,}; "
        f"decided by the {verdict['holder'].split(':')[0]}"
    )


@dataclass
class Phase:
    """One rollout the story started, and how it ended.

    Attributes
    ----------
    strategy
        ``shadow`` or ``canary``.
    rollout_id
        Its id in the registry (``headrace rollout status fraud`` shows the newest).
    steps
        The candidate's traffic weights.
    state
        ``promoted``, ``rolled_back`` or ``aborted`` (ended by the story).
    reason
        Why it ended.
    verdicts
        Every stored verdict (`verdict_record`), oldest first.
    arms
        Per arm (``baseline``, ``candidate``) the summed evidence of the last step.
    pairs, disagreements
        Shadowed pairs and those whose predictions differed (shadow only).
    ended_at_event
        Events the worker had scored when the story saw it end.
    """

    strategy: str
    rollout_id: int
    steps: tuple[float, ...]
    state: str = "running"
    reason: str = ""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: int = 0
    disagreements: int = 0
    ended_at_event: int = 0


@dataclass
class RolloutReport:
    """What the second act did (empty fields for the parts it did not reach).

    Attributes
    ----------
    retrain_rows
        The stream rows (``[first, last)``) release 2 was trained on.
    trained
        Release 2's training outcome.
    release, digest
        Release 2's ref and digest.
    gate
        The validation gate's result.
    phases
        The shadow, then the canary.
    outcome
        One line: what happened to release 2.
    champion
        ``fraud@champion`` when the story ended.
    """

    retrain_rows: tuple[int, int] = (0, 0)
    trained: Trained | None = None
    release: str = ""
    digest: str = ""
    gate: GateResult | None = None
    phases: list[Phase] = field(default_factory=list)
    outcome: str = ""
    champion: str = ""


class _StreamEndedError(Exception):
    """The stream ran out before what the story waited for."""


class RolloutStory:
    """Retrain, gate and roll out release 2 beside the running worker (a thread).

    Parameters
    ----------
    registry
        The demo's registry (shared with the worker).
    home
        Where release 2's inputs go.
    stream
        The generated transactions the producer sends (event i is row i).
    malformed
        True for the rows sent malformed (never a training row).
    drift_at
        The first drifted row.
    retrain_rows
        Labelled rows after the drift point to train release 2 on.
    scored, labelled
        How many events the worker has scored, and how many events' labels the producer
        has sent so far.
    min_samples, max_samples
        Events per arm (pairs in shadow) before any decision of a step, and the sample at
        which a step that showed no harm advances or promotes (the plan's fields).
    history_fraud_rate
        The fraud rate of release 1's training data: the plan's mean-score tolerance
        widens by how far the rate after the drift moved from it.
    canary_steps
        The canary's weights in percent.
    shadow_pairs
        Pairs after which the story ends a shadow the judge has not ended (the judge
        decides by `max_samples` pairs unless its distribution alarm holds the rollout).
    say
        Narration.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        home: Path,
        stream: Transactions,
        malformed: np.ndarray,
        drift_at: int,
        retrain_rows: int,
        scored: Callable[[], int],
        labelled: Callable[[], int],
        min_samples: int = 500,
        max_samples: int = 4000,
        history_fraud_rate: float = 0.0,
        canary_steps: tuple[float, ...] = (25.0, 50.0, 100.0),
        shadow_pairs: int = 20_000,
        say: Say = print,
    ) -> None:
        self.registry = registry
        self.home = home
        self.stream = stream
        self.malformed = malformed
        self.drift_at = drift_at
        self.retrain_rows = retrain_rows
        self.scored = scored
        self.labelled = labelled
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.history_fraud_rate = history_fraud_rate
        self.canary_steps = canary_steps
        self.shadow_pairs = shadow_pairs
        self.say = say
        self.report = RolloutReport()
        self.error: BaseException | None = None
        self._alarmed = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None

    # -- driven by the demo -----------------------------------------------------------

    def alarm(self) -> None:
        """The drift alarm came: the story may begin."""
        self._alarmed.set()

    def stream_ended(self) -> None:
        """Every event is scored: end what runs, and finish."""
        self._ended.set()

    def start(self) -> None:
        """Run the story in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="demo-rollout", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the story's thread is still at work."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the story's thread (at most `timeout` seconds)."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    # -- the story --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._story()
        except _StreamEndedError as exc:
            self.report.outcome = str(exc)
            self.say(f"    {exc}")
        except Exception as exc:  # narrated and kept; the demo's first act still reports
            self.error = exc
            self.report.outcome = f"the rollout story failed: {exc}"
            self.say(f"    the rollout story failed: {exc!r}")
        finally:
            self._end_running()
            champion = self.registry.aliases(NAME).get("champion")
            self.report.champion = f"{NAME}:{champion}" if champion is not None else ""

    def _wait(self, ready: Callable[[], bool], *, what: str) -> None:
        """Wait until `ready()`; raise `_StreamEndedError` naming `what` when the stream
        ends first."""
        while not ready():
            if self._ended.is_set():
                if ready():
                    return
                raise _StreamEndedError(
                    f"the event budget ran out before {what}: give the demo more --events"
                )
            time.sleep(0.05)

    def _story(self) -> None:
        from headrace.demo.training import register_trained, retrain, validation_gate

        self._wait(self._alarmed.is_set, what="a drift alarm")
        first, last = self.drift_at, min(self.drift_at + self.retrain_rows, len(self.stream))
        if last - first < self.retrain_rows:
            raise _StreamEndedError(
                f"no retrain: {last - first:,} events after the drift in this run, "
                f"{self.retrain_rows:,} needed; give the demo more --events"
            )
        self.say(
            f"4/10 retraining: waiting for the labels of events {first:,}-{last - 1:,} (the "
            f"{self.retrain_rows:,} after the drift point) to come back on the feedback topic"
        )
        self._wait(lambda: self.labelled() >= last, what="the labels to retrain on came back")
        rows = np.arange(first, last)[~self.malformed[first:last]]
        self.report.retrain_rows = (first, last)
        trained, holdout = retrain(self.home, self.stream, rows=rows)
        self.report.trained = trained
        release = register_trained(
            self.registry,
            trained,
            alias=None,
            parent=f"{NAME}:1",
            reason="demo: retrained after the drift alarm",
        )
        self.report.release, self.report.digest = release.ref, release.digest
        self.say(
            f"    the same recipe on {len(rows):,} labelled transactions after the drift: "
            f"held-out AUC {trained.auc:.3f}, fraud when P(fraud) >= {trained.threshold:.3f}; "
            f"registered as {release.ref} (parent {NAME}:1) digest {release.digest[:16]}... "
            f"at event {self.scored():,}"
        )
        gate = validation_gate(
            self.registry, champion=f"{NAME}:1", challenger=release.ref, holdout=holdout
        )
        self.report.gate = gate
        self.say(f"5/10 validation gate {gate.reason()}")
        if not gate.passed:
            self.report.outcome = f"{release.ref} failed the validation gate: not rolled out"
            return
        shadow = self._roll_out(release.version, "shadow", (100.0,))
        if shadow.state == "promoted":
            self.report.outcome = (
                f"{release.ref} promoted by its shadow (it decided as {NAME}:1 did); "
                "no canary needed"
            )
            self.say(f"7/10 canary: not needed, {release.ref} is champion already")
            return
        canary = self._roll_out(release.version, "canary", self.canary_steps)
        if canary.state == "promoted":
            self.report.outcome = f"{release.ref} promoted by its canary: champion moved to it"
        elif canary.state == "rolled_back":
            self.report.outcome = (
                f"{release.ref} rolled back by its canary ({canary.reason}); "
                f"{NAME}:1 stays champion"
            )
        else:
            self.report.outcome = f"{release.ref}'s canary ended: {canary.reason}"

    def _roll_out(self, version: int, strategy: str, steps: tuple[float, ...]) -> Phase:
        import msgspec

        from headrace.rollout.compat import plan_rollout

        plan = plan_rollout(
            self.registry,
            NAME,
            version,
            strategy=strategy,
            steps=steps,
            min_samples=self.min_samples,
        )
        plan = msgspec.structs.replace(
            plan,
            max_samples=max(self.max_samples, self.min_samples),
            score_tolerance=self._score_tolerance(plan.score_tolerance),
        )
        state = self.registry.start_rollout(plan, reason=f"demo: {strategy} after the gate")
        phase = Phase(strategy=strategy, rollout_id=state.id, steps=plan.steps)
        self.report.phases.append(phase)
        number = "6/10" if strategy == "shadow" else "7/10"
        if strategy == "shadow":
            what = (
                "the candidate scores every event beside the champion; its outputs go to "
                "the shadow file only"
            )
        else:
            what = (
                f"steps {', '.join(f'{w:g}%' for w in plan.steps)} of the traffic, "
                "sticky by event id; 100% is reached by promotion"
            )
        self.say(
            f"{number} {strategy} rollout {state.id} of {NAME}:{version} against "
            f"{NAME}:{plan.baseline} at event {self.scored():,}: {what}; the worker or the "
            "HTTP server, whichever holds the lease, judges once each arm has "
            f"{plan.min_samples:,} events per step (promotion without "
            f"proven non-inferiority at {plan.max_samples:,}), alpha {plan.alpha:g}"
        )
        trained = self.report.trained
        if trained is not None and strategy == "canary":
            self.say(
                f"    mean-score tolerance {plan.score_tolerance:g}: the judge's default 0.01 "
                f"plus the change of the fraud rate the labels showed "
                f"({self.history_fraud_rate:.1%} in {NAME}:1's data, {trained.fraud_rate:.1%} "
                "after the drift); a retrain calibrated to the new rate is meant to score "
                "higher on average by about that much"
            )
        self._follow(phase)
        return phase

    def _follow(self, phase: Phase) -> None:
        """Narrate `phase`'s verdicts as the worker stores them, until it ends; end a
        shadow the judge has not ended by `shadow_pairs` pairs, and anything still
        running when the stream runs out."""
        told = 0
        while True:
            state = self._state(phase)
            told = self._tell(phase, told)
            if state is None or state.state != "running":
                break
            if phase.strategy == "shadow":
                self._evidence(phase, state)
                if phase.pairs >= self.shadow_pairs:
                    self._end(
                        phase,
                        f"demo: the shadow showed {phase.disagreements:,} disagreements in "
                        f"{phase.pairs:,} pairs without a verdict; a canary decides",
                    )
                    break
            if self._ended.is_set():
                self._end(phase, "demo: the event budget ran out before a verdict")
                break
            time.sleep(0.1)  # a few cheap registry reads per look
        self._tell(phase, told)
        state = self._state(phase)
        if state is not None:
            self._evidence(phase, state)
            phase.state = state.state
            phase.reason = state.reason
        phase.ended_at_event = self.scored()
        if phase.strategy == "shadow" and phase.pairs:
            share = phase.disagreements / phase.pairs
            self.say(
                f"    the shadow's disagreement: {phase.disagreements:,} of {phase.pairs:,} "
                f"pairs ({share:.1%}) decided otherwise than {NAME}:1 (every pair until the "
                "worker left the shadow, a few after the verdict included)"
            )
            if phase.state != "promoted":
                self.say(
                    "    a shadow promotes only a candidate that decides as the champion "
                    "does; a retrain after drift is meant to decide differently, so the gate "
                    "judged its quality on labelled rows and a canary now checks that it is "
                    "safe to serve: errors, latency, scores"
                )
        self.say(
            f"    {phase.strategy} rollout {phase.rollout_id} ended {phase.state} at event "
            f"{phase.ended_at_event:,}: {phase.reason}"
        )

    def _score_tolerance(self, default: float) -> float:
        """The plan's mean-score tolerance plus the change of the fraud rate the labels
        showed: a retrain calibrated to the new rate is meant to score higher (or lower)
        on average by about that much, which is not the harm the test is for."""
        trained = self.report.trained
        if trained is None:
            return default
        return round(default + abs(trained.fraud_rate - self.history_fraud_rate), 4)

    def _state(self, phase: Phase) -> RolloutState | None:
        state = self.registry.rollout(NAME)
        return state if state is not None and state.id == phase.rollout_id else None

    def _tell(self, phase: Phase, told: int) -> int:
        """Narrate the verdicts stored since the first `told` ones; return how many now."""
        rows = self.registry.verdicts(phase.rollout_id)
        for row in rows[told:]:
            record = verdict_record(row, phase.steps)
            phase.verdicts.append(record)
            if record["decision"] != "continue":
                self.say(describe_verdict(phase.strategy, record))
        return max(told, len(rows))

    def _evidence(self, phase: Phase, state: RolloutState) -> None:
        from headrace.rollout.state import arm_summary, read_evidence

        steps = read_evidence(self.registry, phase.rollout_id)
        if not steps:
            return
        current = steps[min(state.step, len(steps) - 1)]
        phase.arms = {
            "baseline": arm_summary(current.baseline),
            "candidate": arm_summary(current.candidate),
        }
        phase.pairs = current.pairs.pairs
        phase.disagreements = current.pairs.disagreements

    def _end(self, phase: Phase, reason: str) -> None:
        from headrace.errors import RolloutError

        try:
            self.registry.abort_rollout(NAME, reason=reason)
        except RolloutError:
            pass  # the worker's verdict ended it meanwhile: that one stands

    def _end_running(self) -> None:
        """Leave no rollout running behind the demo (a failure midway, say)."""
        from headrace.errors import RolloutError

        state = self.registry.rollout(NAME)
        if state is not None and state.running:
            try:
                self.registry.abort_rollout(NAME, reason="demo: the demo ended")
            except RolloutError:
                pass
