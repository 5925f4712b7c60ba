"""Coverage-guided fuzzing of event decoding and validation (atheris), run by hand.

The entry point is the one the property tests hold (tests/unit/pipeline/
test_decode_properties.py): a batch of events through `Worker.process`, both decode paths
included. One fuzz input is one batch, its events separated by newlines. Any exception
out of `Worker.process`, or an event neither scored nor dead-lettered, is a finding.

Run (from the repository root; ``pip install atheris`` comes with the dev extra)::

    .venv/bin/python fuzz/fuzz_event_decode.py fuzz/corpus/event_decode \
        -max_total_time=300 -max_len=8192

(the first directory collects new inputs: give a scratch one first to keep the
committed corpus small, e.g. `/tmp/fuzz-out fuzz/corpus/event_decode`)

New inputs that reach new code are added to the corpus directory; keep the few that
matter (small, distinct) and commit them with a fix they found.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence

import atheris

with atheris.instrument_imports(include=["headrace"]):
    from headrace.inference.service import InferenceService
    from headrace.pipeline.decode import EventDecoder
    from headrace.pipeline.spec import pipeline_spec_from_dict
    from headrace.pipeline.worker import Worker
    from headrace.release.config import ReleaseConfig
    from headrace.release.schema import Field, Schema
    from headrace.streams.base import Message
    from headrace.streams.memory import MemorySource

import numpy as np

from headrace.runtimes.base import ModelOutput
from headrace.streams.base import OutRecord
from headrace.types import Matrix


class _Counting:
    """A sink that counts and drops (a memory:// topic would keep every record: the
    fuzzer's RSS limit would read that as a leak)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0

    def open(self) -> None:
        pass

    def send(self, records: Sequence[OutRecord]) -> None:
        self.sent += len(records)

    def flush(self, *, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Threshold:
    """A tiny real model: P(fraud) rises with the amount."""

    flavor = "python"

    def predict(self, matrix: Matrix) -> ModelOutput:
        p = np.clip(np.asarray(matrix[:, 0], dtype=float) / 1000.0, 0, 1)
        return ModelOutput(
            predictions=(p >= 0.5).astype(int),
            probabilities=np.column_stack([1 - p, p]),
            classes=np.array([0, 1]),
        )


SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", min=0, max=1000),
        Field(name="merchant", type="category", values=["food", "travel"]),
        Field(name="count", type="int", required=False, default=0),
        Field(name="when", type="timestamp", required=False, nullable=True),
        Field(name="note", type="string", nullable=True, required=False),
    ]
)
SERVICE = InferenceService(
    _Threshold(),
    schema=SCHEMA,
    inputs=["amount", "merchant", "count"],
    config=ReleaseConfig(threshold=0.5, labels=["legit", "fraud"]),
    release="fraud:1",
    release_digest="d" * 64,
)
NAME = f"fuzz-{uuid.uuid4().hex[:8]}"
SPEC = pipeline_spec_from_dict(
    {
        "name": "fuzz",
        "model": "fraud:1",
        "source": {"url": f"memory://{NAME}/events", "group": "fuzz"},
        "outputs": [{"url": f"memory://{NAME}/scores"}],
        "dead_letter": {"url": f"memory://{NAME}/dlq"},
        "id_field": "event_id",
        "event_time_field": "ts",
        "limits": {"max_event_bytes": 4096},
    }
)
SCORES, DLQ = _Counting(f"memory://{NAME}/scores"), _Counting(f"memory://{NAME}/dlq")
WORKER = Worker(
    SPEC,
    service=SERVICE,
    source=MemorySource(f"memory://{NAME}/events", group="fuzz"),
    outputs=[SCORES],
    dead_letter=DLQ,
    dedupe=None,
)
DECODER = EventDecoder(SCHEMA, id_field="event_id", time_field="ts", max_event_bytes=4096)


def test_one_input(data: bytes) -> None:
    values = [v for v in data.split(b"\n") if v] or [data]
    csv = data.startswith(b"csv:")
    headers = [("content-type", b"csv")] if csv else []
    messages = [
        Message(value=v, topic="events", offset=i, headers=list(headers))
        for i, v in enumerate(values)
    ]
    # both paths on their own, then the whole batch through the worker
    DECODER._decode_each(messages, csv=csv)
    DECODER._decode_fast(messages, csv=csv)
    before = WORKER.stats.outputs + WORKER.stats.dead_letters
    WORKER.process(messages)
    after = WORKER.stats.outputs + WORKER.stats.dead_letters
    if after - before != len(messages):
        raise AssertionError(f"{len(messages)} events, {after - before} outputs + dead letters")
    if SCORES.sent + DLQ.sent != after:
        raise AssertionError(f"{after} records counted, {SCORES.sent + DLQ.sent} sent")
    WORKER._in_flight.clear()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
