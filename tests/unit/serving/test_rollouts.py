"""A server's rollout arms without a server: assignment, per-request evidence, shadow bounds.

The releases are real inference cores over the shipped `ConstantModel`; the batcher is
the server's own. What goes over the wire is covered by
tests/integration/serving/test_rollout_serving.py.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.inference.service import InferenceService
from headrace.inference.validate import Rejection
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.rollout.evidence import StepEvidence
from headrace.rollout.plan import RolloutPlan
from headrace.rollout.routing import Routing, candidate_mask
from headrace.runtimes.testing import ConstantModel
from headrace.serving.batching import AdaptiveBatcher, BatchPart
from headrace.serving.codec import InputTensor
from headrace.serving.errors import InvalidInputError, OverloadedError
from headrace.serving.rollouts import (
    Arm,
    EvidenceTally,
    assign_arm,
    model_ms,
    predicted_rows,
)
from headrace.serving.shadow import ShadowJob, ShadowScorer
from headrace.types import Columns

SCHEMA = Schema(fields=[Field(name="a", type="float"), Field(name="b", type="float")])


def _service(release: str, value: float) -> InferenceService:
    return InferenceService(
        ConstantModel(value),
        schema=SCHEMA,
        inputs=["a", "b"],
        config=ReleaseConfig(),
        release=release,
        release_digest="d" * 64,
    )


BASELINE = _service("fraud:1", 0.25)
CANDIDATE = _service("fraud:2", 0.75)


def _routing(strategy: str, weight: float, *, salt: str = "s") -> Routing:
    plan = RolloutPlan(
        name="fraud",
        baseline=1,
        candidate=2,
        strategy=strategy,  # type: ignore[arg-type]
        steps=(weight,),
        salt=salt,
        score_edges=(0.5,),
    )
    return Routing(baseline=BASELINE, candidate=CANDIDATE, plan=plan, rollout_id=7)


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(max_size=64),
    salt=st.text(max_size=16),
    low=st.floats(min_value=0, max_value=100),
    high=st.floats(min_value=0, max_value=100),
)
def test_a_key_lands_where_every_worker_puts_it_and_stays_there_as_the_weight_grows(
    key: str, salt: str, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    at_low = assign_arm(_routing("canary", low, salt=salt), key)
    at_high = assign_arm(_routing("canary", high, salt=salt), key)
    assert (at_low == "candidate") == bool(candidate_mask([key], salt=salt, weight=low)[0])
    if at_low == "candidate":
        assert at_high == "candidate"


def test_without_a_key_the_arm_is_drawn_at_the_weight(seed: int) -> None:
    random.seed(seed)
    assert {assign_arm(_routing("canary", 0), None) for _ in range(200)} == {"baseline"}
    assert {assign_arm(_routing("canary", 100), None) for _ in range(200)} == {"candidate"}
    n = 4000
    hits = sum(assign_arm(_routing("canary", 30), None) == "candidate" for _ in range(n))
    sd = (n * 0.3 * 0.7) ** 0.5
    assert abs(hits - 0.3 * n) < 6 * sd  # a 6-sigma band: fails about once in 10^9


def test_outside_a_rollout_every_request_is_the_baselines() -> None:
    assert assign_arm(Routing(baseline=BASELINE), "any") == "baseline"


def _part(n_rows: int, rejected: list[int], stages_ns: tuple[int, ...] = ()) -> BatchPart:
    kept = [r for r in range(n_rows) if r not in rejected]
    return BatchPart(
        predictions=np.array([float(r) for r in kept]),
        scores=np.array([0.1 * r for r in kept]),
        rejections=[Rejection(row=r, field=None, reason="x", stage="predict") for r in rejected],
        release="fraud:2",
        release_digest="d" * 64,
        n_rows=n_rows,
        batch_rows=n_rows,
        stages_ns=stages_ns,
    )


def test_a_requests_predicted_rows_and_model_time() -> None:
    assert predicted_rows(_part(5, [1, 3])).tolist() == [0, 2, 4]
    assert predicted_rows(_part(3, [])).tolist() == [0, 1, 2]
    assert model_ms(_part(1, [], (1_000_000, 2_000_000, 3_500_000))) == pytest.approx(2.5)
    assert model_ms(_part(1, [])) is None  # a batch that did not report its stages


def test_the_tally_hands_each_steps_evidence_on_summed_per_arm() -> None:
    recorded: list[tuple[int, int, StepEvidence]] = []
    canary = _routing("canary", 50)
    stepped = Routing(
        baseline=BASELINE, candidate=CANDIDATE, plan=canary.plan, rollout_id=7, step=1
    )

    async def main() -> None:
        tally = EvidenceTally(lambda *args: recorded.append(args), every_s=3600)
        tally.add(canary, "baseline", rows=3, errors=0, latency_ms=1.0, scores=np.array([0.2] * 3))
        tally.add(canary, "candidate", rows=2, errors=1, latency_ms=2.0, scores=np.array([0.7]))
        tally.add(canary, "candidate", rows=1, errors=0, latency_ms=None, scores=None)
        tally.add(stepped, "candidate", rows=4, errors=0, latency_ms=3.0, scores=None)
        assert recorded == []  # held until the window ends
        tally.flush()

    asyncio.run(main())
    by_step = {(rollout, step): evidence for rollout, step, evidence in recorded}
    assert sorted(by_step) == [(7, 0), (7, 1)]
    first = by_step[(7, 0)]
    assert (first.baseline.events, first.baseline.errors, first.baseline.scored) == (3, 0, 3)
    assert (first.candidate.events, first.candidate.errors, first.candidate.scored) == (3, 1, 1)
    assert sum(first.candidate.latency_counts) == 1  # one latency per measured request
    assert first.baseline.score_counts == [3, 0] and first.candidate.score_counts == [0, 1]
    assert by_step[(7, 1)].candidate.events == 4 and by_step[(7, 1)].baseline.events == 0


def test_the_tally_hands_on_by_itself_after_its_window_or_a_full_count() -> None:
    recorded: list[tuple[int, int, StepEvidence]] = []
    routing = _routing("canary", 50)

    async def main() -> None:
        tally = EvidenceTally(lambda *args: recorded.append(args), every_s=0.01, max_requests=3)
        tally.add(routing, "baseline", rows=1, errors=0, latency_ms=1.0, scores=None)
        async with asyncio.timeout(30):  # the window's timer, not a measured delay
            while not recorded:
                await asyncio.sleep(0.005)
        for _ in range(3):  # the third request hands on at once
            tally.add(routing, "baseline", rows=1, errors=0, latency_ms=1.0, scores=None)
        assert [e.baseline.events for _, _, e in recorded] == [1, 3]

    asyncio.run(main())


def test_shadow_scoring_is_bounded_counts_its_drops_and_writes_the_candidates_outputs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shadow" / "serving.jsonl"
    observed: list[dict[str, Any]] = []
    drops: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()
        batcher = AdaptiveBatcher("fraud:2", mode="inline")

        async def infer(service: InferenceService, columns: Columns, n_rows: int) -> BatchPart:
            await gate.wait()  # the candidate is slow: shadow tasks pile up
            return await batcher.infer(service, columns, n_rows=n_rows)

        def observe(name: str, routing: Routing, arm: Arm, **counts: Any) -> None:
            observed.append({"name": name, "arm": arm, **counts})

        scorer = ShadowScorer(
            path, infer=infer, observe=observe, timeout_s=30, max_pending=2, on_drop=drops.append
        )
        routing = _routing("shadow", 100)
        inputs = [
            InputTensor(name="a", datatype="FP64", shape=(2,), data=np.array([1.0, 2.0])),
            InputTensor(name="b", datatype="FP64", shape=(2,), data=np.array([3.0, 4.0])),
        ]
        base = AdaptiveBatcher("fraud", mode="inline")
        columns = {"a": inputs[0].data, "b": inputs[1].data}
        answered = await base.infer(BASELINE, columns, n_rows=2)
        accepted = [
            scorer.submit(ShadowJob("fraud", routing, inputs, f"k{i}", answered)) for i in range(5)
        ]
        assert accepted == [True, True, False, False, False]
        assert scorer.pending == 2 and scorer.dropped == 3
        gate.set()
        await scorer.close()
        await batcher.close()
        await base.close()

    asyncio.run(main())
    assert drops == ["fraud"] * 3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == ["k0", "k1"]
    for line in lines:
        assert line["release"] == "fraud:2" and line["baseline_release"] == "fraud:1"
        assert line["predictions"] == [0.75, 0.75] and line["baseline_predictions"] == [0.25] * 2
    assert [(o["arm"], o["rows"], o["errors"]) for o in observed] == [("candidate", 2, 0)] * 2
    assert all(o["pairs"].pairs == 2 and o["pairs"].disagreements == 2 for o in observed)


def test_a_candidate_queue_that_refuses_a_shadow_is_a_drop_not_an_error(tmp_path: Path) -> None:
    observed: list[Any] = []
    drops: list[str] = []

    async def main() -> None:
        async def infer(service: InferenceService, columns: Columns, n_rows: int) -> BatchPart:
            raise OverloadedError("Model 'fraud:2' has 9 rows queued (limit 8)", retry_after=1)

        async def refused(service: InferenceService, columns: Columns, n_rows: int) -> BatchPart:
            raise InvalidInputError("the candidate's schema refuses the row")

        inputs = [
            InputTensor(name="a", datatype="FP64", shape=(1,), data=np.array([1.0])),
            InputTensor(name="b", datatype="FP64", shape=(1,), data=np.array([2.0])),
        ]
        base = AdaptiveBatcher("fraud", mode="inline")
        answered = await base.infer(BASELINE, {"a": inputs[0].data, "b": inputs[1].data}, n_rows=1)
        job = ShadowJob("fraud", _routing("shadow", 100), inputs, "k", answered)
        for run in (infer, refused):
            scorer = ShadowScorer(
                tmp_path / "s.jsonl",
                infer=run,
                observe=lambda *args, **counts: observed.append(counts),
                timeout_s=30,
                on_drop=drops.append,
            )
            assert scorer.submit(job)
            await scorer.close()
        await base.close()

    asyncio.run(main())
    assert drops == ["fraud"]  # the full queue: not scored, no evidence
    # The candidate's own schema refusing what the baseline answered: its error.
    assert [(o["rows"], o["errors"]) for o in observed] == [(1, 1)]
    (line,) = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert line["error"].startswith("InvalidInputError (400)")
