"""A batch's outcome: built by keyword, and counted right when stages overlap.

The worker counts repeats from the failures decoding found; the worker's fallback (when
the inference core raises, each event is scored alone and the ones that raise become
dead letters) appends to the same failures later, so the count is taken before it runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from headrace.pipeline.dedupe import MemoryDedupe
from headrace.pipeline.outcome import BatchOutcome
from headrace.runtimes.base import ModelOutput
from headrace.types import Matrix
from unit.pipeline.test_worker import Rig, Threshold, event


class Misshapen:
    """A real user-model fault: one output too many when an amount is 13, which the
    inference core refuses by raising (not a per-row rejection)."""

    flavor = "python"

    def predict(self, matrix: Matrix) -> ModelOutput:
        out = Threshold().predict(matrix)
        if (np.asarray(matrix[:, 0]) == 13.0).any():
            return ModelOutput(predictions=np.append(out.predictions, 0))
        return out


def test_repeats_are_counted_apart_from_events_the_core_raises_for() -> None:
    rig = Rig()
    rig.produce([event(1), event(2), event(1), event(13), event(3), event(2)])
    worker = rig.worker(model=Misshapen(), dedupe=MemoryDedupe(ttl_s=60, max_keys=1000))
    stats = worker.run(max_events=6)
    assert stats.deduplicated == 2
    assert stats.outputs == 3 and stats.dead_letters == 1
    (letter,) = rig.dead()
    assert letter["stage"] == "validate" and letter["error"].startswith("Unexpected ")


def test_the_outcome_is_built_by_keyword_only() -> None:
    fields = [f.name for f in dataclasses.fields(BatchOutcome) if f.name != "sent_ns"]
    values: dict[str, Any] = dict.fromkeys(fields)
    with pytest.raises(TypeError):
        BatchOutcome(*values.values())  # type: ignore[misc]
    assert BatchOutcome(**values).sent_ns == 0
