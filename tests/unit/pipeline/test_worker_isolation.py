"""The worker's last lines of defence: an exception the inference core should never raise,
or an output that cannot be encoded, is one event's dead letter, not the worker's end.

No event is known to reach either today (the core rejects bad rows with reasons and
isolates model failures); these keep a future bug in validation or post-processing from
turning one event into a crash loop.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from tests.unit.pipeline.test_worker import SCHEMA, Rig, Threshold, event

from headrace.inference.service import InferenceResult, InferenceService
from headrace.release.config import ReleaseConfig
from headrace.runtimes.base import ModelOutput
from headrace.types import Columns, Matrix


class BrittleService(InferenceService):
    """An inference core with a bug: it raises for a batch holding the amount 13."""

    def infer(
        self, columns: Columns, *, n_rows: int, coerce_strings: bool = False
    ) -> InferenceResult:
        if any(v == 13.0 for v in np.asarray(columns["amount"]).tolist()):
            raise ValueError("a bug in validation")
        return super().infer(columns, n_rows=n_rows, coerce_strings=coerce_strings)


class Unencodable(Threshold):
    """Predicts a complex number (no JSON for it) for the amount 13."""

    def predict(self, matrix: Matrix) -> ModelOutput:
        amounts = np.asarray(matrix[:, 0], dtype=float)
        predictions = np.empty(len(amounts), dtype=object)
        predictions[:] = [complex(1, 1) if a == 13.0 else int(a > 500) for a in amounts]
        return ModelOutput(predictions=predictions)


def _service(cls: type[InferenceService], model: Any) -> InferenceService:
    return cls(
        model,
        schema=SCHEMA,
        inputs=["amount", "merchant"],
        config=ReleaseConfig(),
        release="fraud:1",
        release_digest="d" * 64,
    )


def _run(rig: Rig, service: InferenceService) -> tuple[list[dict[str, Any]], list[Any]]:
    from headrace.pipeline.worker import Worker
    from headrace.streams.memory import MemorySink, MemorySource

    Worker(
        rig.spec,
        service=service,
        source=MemorySource(f"memory://{rig.name}/events", group="scoring"),
        outputs=[MemorySink(f"memory://{rig.name}/scores")],
        dead_letter=MemorySink(f"memory://{rig.name}/dlq"),
        dedupe=None,
    ).run(max_events=40)
    return rig.outputs(), rig.dead()


def test_an_event_the_core_raises_for_is_a_dead_letter() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(40)])
    outputs, dead = _run(rig, _service(BrittleService, Threshold()))
    assert sorted(o["event_id"] for o in outputs) == sorted(f"e{i}" for i in range(40) if i != 13)
    (letter,) = dead
    assert letter["stage"] == "validate" and "Unexpected ValueError" in letter["error"]
    assert "a bug" not in letter["error"]  # the message may quote the event: type only
    assert base64.b64decode(letter["payload"]) == event(13)
    assert rig.broker.lag("scoring", "events") == 0


def test_an_output_that_cannot_be_encoded_is_a_dead_letter() -> None:
    rig = Rig()
    rig.produce([event(i) for i in range(40)])
    outputs, dead = _run(rig, _service(InferenceService, Unencodable()))
    assert sorted(o["event_id"] for o in outputs) == sorted(f"e{i}" for i in range(40) if i != 13)
    (letter,) = dead
    assert letter["stage"] == "output" and "Cannot encode" in letter["error"]
    assert orjson.loads(base64.b64decode(letter["payload"]))["event_id"] == "e13"
