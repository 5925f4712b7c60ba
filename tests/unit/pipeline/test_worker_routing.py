"""The worker's route stage: a rollout's arms in one batch, sticky by key, shadow apart,
switches between batches; nothing lost, nothing scored twice, evidence per arm.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import orjson
import pytest
from tests.unit.pipeline.test_worker import BAD, SCHEMA, Rig, Threshold, event

from headrace.inference.service import InferenceService
from headrace.pipeline.worker import Worker
from headrace.registry.store import Registry
from headrace.release.config import ReleaseConfig
from headrace.rollout.participant import RolloutParticipant
from headrace.rollout.plan import RolloutPlan
from headrace.rollout.routing import Routing, candidate_mask
from headrace.runtimes.base import ModelOutput
from headrace.runtimes.testing import FailingModel
from headrace.streams.memory import MemorySink
from headrace.types import Matrix


class Inverse:
    """The candidate: P(fraud) falls with the amount (so its outputs are told apart)."""

    flavor = "python"

    def predict(self, matrix: Matrix) -> ModelOutput:
        p = 1.0 - np.clip(np.asarray(matrix[:, 0], dtype=float) / 1000.0, 0, 1)
        proba = np.column_stack([1 - p, p])
        return ModelOutput(
            predictions=(p >= 0.5).astype(int), probabilities=proba, classes=np.array([0, 1])
        )


def make_service(model: Any, release: str) -> InferenceService:
    return InferenceService(
        model,
        schema=SCHEMA,
        inputs=["amount", "merchant"],
        config=ReleaseConfig(threshold=0.5, labels=["legit", "fraud"]),
        release=release,
        release_digest=release[-1] * 64,
    )


def plan(strategy: str, weight: float) -> RolloutPlan:
    return RolloutPlan(
        name="fraud",
        baseline=1,
        candidate=2,
        strategy=strategy,  # type: ignore[arg-type]
        steps=(weight,),
        salt="s1",
        score_edges=(0.2, 0.4, 0.6, 0.8),
    )


class Follower:
    """Stands in for `ReleaseFollower`: the test sets `current` between batches."""

    def __init__(self, routing: Routing) -> None:
        self.current = routing

    def start(self) -> None:
        """Nothing runs in the background here."""

    def stop(self) -> None:
        """Nothing to stop."""


def routed_worker(
    rig: Rig, routing: Routing, *, shadow: MemorySink | None = None
) -> tuple[Worker, RolloutParticipant]:
    worker = rig.worker()
    participant = RolloutParticipant(cast(Registry, None), instance="test")
    worker.follower = cast(Any, Follower(routing))
    worker.participant = participant
    worker.shadow_sink = shadow
    return worker, participant


def test_a_canary_splits_by_key_and_every_output_names_its_release() -> None:
    rig = Rig()
    good = [event(i) for i in range(600)]
    bad = [BAD["wrong type"](1000 + i) for i in range(20)]
    rig.produce(good + bad)
    baseline, candidate = make_service(Threshold(), "fraud:1"), make_service(Inverse(), "fraud:2")
    routing = Routing(baseline=baseline, candidate=candidate, plan=plan("canary", 30), rollout_id=7)
    worker, participant = routed_worker(rig, routing)
    worker.run(max_events=620)

    outputs = rig.outputs()
    ids = [o["event_id"] for o in outputs]
    assert sorted(ids) == sorted(f"e{i}" for i in range(600))  # each good event once
    assert len(rig.dead()) == 20  # each bad one dead-lettered once
    expected = candidate_mask([f"e{i}" for i in range(600)], salt="s1", weight=30)
    by_id = {o["event_id"]: o for o in outputs}
    for i in range(600):
        want = "fraud:2" if expected[i] else "fraud:1"
        assert by_id[f"e{i}"]["release"] == want
    share = expected.mean()
    assert 0.2 < share < 0.4
    evidence = participant.totals(7, 0)
    routed = candidate_mask(
        [f"e{i}" for i in [*range(600), *range(1000, 1020)]], salt="s1", weight=30
    )
    assert evidence.candidate.events == int(routed.sum())  # rows routed, the invalid ones too
    assert evidence.baseline.events == 620 - int(routed.sum())
    assert evidence.baseline.errors == evidence.candidate.errors == 0
    # one matched-size timed call per arm per batch in which both arms scored
    assert sum(evidence.baseline.latency_counts) == sum(evidence.candidate.latency_counts) > 0
    assert sum(evidence.candidate.score_counts) == evidence.candidate.scored == int(expected.sum())


def test_assignment_is_sticky_as_the_weight_grows() -> None:
    keys = [f"user-{i}" for i in range(5000)]
    at5 = candidate_mask(keys, salt="x", weight=5)
    at25 = candidate_mask(keys, salt="x", weight=25)
    assert np.all(at25[at5])  # every key on the candidate at 5% stays there at 25%
    assert 0.03 < at5.mean() < 0.07 and 0.22 < at25.mean() < 0.28
    other = candidate_mask(keys, salt="y", weight=25)
    assert 0.03 < (at25 & other).mean() < 0.09  # another rollout splits independently


def test_a_shadow_never_reaches_the_sinks_and_its_failures_are_evidence() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(300)] + [BAD["undecodable"](900)])
    shadow = MemorySink(f"memory://{rig.name}/shadow")
    baseline = make_service(Threshold(), "fraud:1")
    candidate = make_service(
        FailingModel(
            fail_when=lambda m: np.asarray(m[:, 0], dtype=float) % 10 == 0, model=Inverse()
        ),
        "fraud:2",
    )
    routing = Routing(
        baseline=baseline, candidate=candidate, plan=plan("shadow", 100), rollout_id=3
    )
    worker, participant = routed_worker(rig, routing, shadow=shadow)
    worker.run(max_events=301)

    outputs = rig.outputs()
    assert {o["release"] for o in outputs} == {"fraud:1"}
    assert len(outputs) == 300
    assert len(rig.dead()) == 1  # the undecodable event, once; none from the shadow
    shadowed = [orjson.loads(m.value) for m in rig.broker.messages("shadow")]
    assert shadowed and {o["release"] for o in shadowed} == {"fraud:2"}
    evidence = participant.totals(3, 0)
    assert evidence.baseline.events == evidence.candidate.events == 300
    assert evidence.candidate.errors == 300 - len(shadowed) == 30  # amounts 0, 10, ... 290
    assert evidence.baseline.errors == 0
    assert evidence.pairs.pairs == len(shadowed)


def test_a_switch_takes_effect_between_batches() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(64)])
    old, new = make_service(Threshold(), "fraud:1"), make_service(Inverse(), "fraud:2")
    worker, _ = routed_worker(rig, Routing(baseline=old))
    follower = cast(Follower, worker.follower)
    for sink in [*worker.outputs, worker.dead_letter]:
        sink.open()
    first = rig.broker.messages("events")[:32]
    worker.process(first)
    follower.current = Routing(baseline=new)
    worker.process(rig.broker.messages("events")[32:])
    for sink in worker.outputs:
        sink.flush(timeout=5.0)
    releases = [o["release"] for o in rig.outputs()]
    assert releases == ["fraud:1"] * 32 + ["fraud:2"] * 32


@pytest.mark.parametrize("weight", [0, 100])
def test_the_extremes_route_everything_one_way(weight: float) -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(100)])
    routing = Routing(
        baseline=make_service(Threshold(), "fraud:1"),
        candidate=make_service(Inverse(), "fraud:2"),
        plan=plan("canary", weight),
        rollout_id=1,
    )
    worker, participant = routed_worker(rig, routing)
    worker.run(max_events=100)
    want = "fraud:2" if weight == 100 else "fraud:1"
    assert {o["release"] for o in rig.outputs()} == {want}
    assert len(rig.outputs()) == 100
    evidence = participant.totals(1, 0)
    assert sum(evidence.baseline.latency_counts) == 0  # no matched calls: no latency evidence


def test_metrics_count_each_arm_and_the_weight() -> None:
    from prometheus_client import generate_latest

    from headrace.monitoring.metrics import WorkerMetrics, new_registry

    rig = Rig()
    rig.produce([event(i) for i in range(400)])
    routing = Routing(
        baseline=make_service(Threshold(), "fraud:1"),
        candidate=make_service(Inverse(), "fraud:2"),
        plan=plan("canary", 25),
        rollout_id=2,
    )
    worker, participant = routed_worker(rig, routing)
    collector = new_registry()
    worker.metrics = WorkerMetrics(collector, pipeline="scoring")
    worker.run(max_events=400)
    text = generate_latest(collector).decode()
    evidence = participant.totals(2, 0)
    for arm, count in (
        ("baseline", evidence.baseline.events),
        ("candidate", evidence.candidate.events),
    ):
        line = (
            f'headrace_pipeline_rollout_events_total{{arm="{arm}",model="fraud",'
            f'pipeline="scoring"}} {float(count)}'
        )
        assert line in text
    assert 'headrace_pipeline_rollout_weight_percent{model="fraud",pipeline="scoring"} 25.0' in text


@pytest.mark.parametrize("every", [1, 4])
def test_latency_is_timed_in_one_batch_of_time_every(every: int) -> None:
    import msgspec

    from headrace.pipeline.spec import RolloutSpec

    rig = Rig()
    rig.spec = msgspec.structs.replace(rig.spec, rollout=RolloutSpec(time_every=every))
    rig.produce([event(i) for i in range(64 * 8)])
    routing = Routing(
        baseline=make_service(Threshold(), "fraud:1"),
        candidate=make_service(Inverse(), "fraud:2"),
        plan=plan("canary", 50),
        rollout_id=4,
    )
    worker, participant = routed_worker(rig, routing)
    worker.run(max_events=64 * 8)
    evidence = participant.totals(4, 0)
    batches = worker.stats.batches
    timed = sum(evidence.candidate.latency_counts)
    assert sum(evidence.baseline.latency_counts) == timed
    assert timed == -(-batches // every)  # batches 1, 1 + every, ...: both arms had rows
    assert evidence.baseline.events + evidence.candidate.events == 64 * 8
