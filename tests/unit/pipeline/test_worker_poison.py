"""Issue 10, defect 1: no event can stop a worker.

Each poison kind (deep nesting, event times that are no time, lone surrogates in ids,
numbers beyond a double) once raised out of `Worker.process` (RecursionError,
OverflowError, ValueError, UnicodeEncodeError): the worker exited and every restart died
on the same event. Each is now a dead letter with its original bytes, reason and stage,
the good events around it are scored and the offsets are committed past it, through the
in-process broker and through a file source.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.unit.pipeline.test_worker import event, service

from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.streams.base import OutRecord
from headrace.streams.file import FileSink, FileSource
from headrace.streams.memory import MemorySink, MemorySource, broker

DEEP_ARRAYS = b"[" * 1000 + b"]" * 1000  # ~2 KB
DEEP_OBJECTS = b'{"a":' * 1000 + b"1" + b"}" * 1000


def _with(raw: bytes) -> bytes:
    return b'{"event_id":"p","amount":1.0,"merchant":"food",' + raw + b"}"


# name -> (bytes, the stage of its dead letter)
POISON: dict[str, tuple[bytes, str]] = {
    "arrays 1000 deep": (DEEP_ARRAYS, "validate"),
    "arrays 3000 deep": (b"[" * 3000 + b"]" * 3000, "decode"),
    "objects 1000 deep": (DEEP_OBJECTS, "validate"),
    "objects 3000 deep": (b'{"a":' * 3000 + b"1" + b"}" * 3000, "decode"),
    # not a feature: ignored, the event is scored (and nothing raised on the way)
    "deep field beside the features": (_with(b'"x":' + b"[" * 1020 + b"]" * 1020), "scored"),
    "deep feature": (
        b'{"event_id":"p","amount":' + DEEP_OBJECTS + b',"merchant":"food"}',
        "validate",
    ),
    "event time 1e308": (_with(b'"ts":1e308'), "validate"),
    "event time -1e308": (_with(b'"ts":-1e308'), "validate"),
    "event time Infinity": (_with(b'"ts":Infinity'), "validate"),
    "event time NaN": (_with(b'"ts":NaN'), "validate"),
    "event time huge int": (_with(b'"ts":' + b"9" * 400), "validate"),
    "event time beyond year 9999": (_with(b'"ts":1e12'), "validate"),
    "id lone surrogate": (b'{"event_id":"\\ud800","amount":1.0,"merchant":"food"}', "validate"),
    "id 5000 digits": (b'{"event_id":' + b"9" * 5000 + b',"amount":1,"merchant":"food"}', "decode"),
    "amount 1e400": (b'{"event_id":"p","amount":1e400,"merchant":"food"}', "validate"),
    "category lone surrogate": (
        b'{"event_id":"p","amount":1.0,"merchant":"\\udfff"}',
        "validate",
    ),
}


def _spec(source: str, scores: str, dlq: str, *, time_field: str | None) -> Any:
    raw: dict[str, Any] = {
        "name": "poison",
        "model": "fraud:1",
        "source": {"url": source, "group": "poison"},
        "outputs": [{"url": scores}],
        "dead_letter": {"url": dlq},
        "id_field": "event_id",
        "batch": {"max_size": 64, "max_wait_ms": 1},
        "limits": {"max_event_bytes": 20_000},
    }
    if time_field is not None:
        raw["event_time_field"] = time_field
    return pipeline_spec_from_dict(raw)


def _check(
    outputs: list[dict[str, Any]], dead: list[dict[str, Any]], poison: bytes, stage: str
) -> None:
    if stage == "scored":
        assert len(outputs) == 11 and not dead
        return
    assert sorted(o["event_id"] for o in outputs) == [f"e{i}" for i in range(10)]
    (letter,) = dead
    assert letter["stage"] == stage, letter["error"]
    assert letter["error"]
    assert base64.b64decode(letter["payload"]) == poison


@pytest.mark.parametrize("time_field", [None, "ts"])
@pytest.mark.parametrize("kind", list(POISON))
def test_a_poison_event_is_a_dead_letter_on_memory(kind: str, time_field: str | None) -> None:
    poison, stage = POISON[kind]
    if time_field is None and kind.startswith("event time"):
        stage = "scored"  # without an event time field, the field is just ignored
    name = f"poison-{uuid.uuid4().hex[:8]}"
    b = broker(name)
    b.create_topic("events", partitions=1)
    values = [event(i) for i in range(5)] + [poison] + [event(i) for i in range(5, 10)]
    b.append("events", [OutRecord(value=v) for v in values])
    spec = _spec(
        f"memory://{name}/events", f"memory://{name}/scores", f"memory://{name}/dlq",
        time_field=time_field,
    )  # fmt: skip
    for run in range(2):  # a restart finds nothing left to choke on
        Worker(
            spec,
            service=service(),
            source=MemorySource(f"memory://{name}/events", group="poison"),
            outputs=[MemorySink(f"memory://{name}/scores")],
            dead_letter=MemorySink(f"memory://{name}/dlq"),
            dedupe=None,
        ).run(max_events=len(values) if run == 0 else 0)
        assert b.lag("poison", "events") == 0
    outputs = [orjson.loads(m.value) for m in b.messages("scores")]
    dead = [orjson.loads(m.value) for m in b.messages("dlq")]
    _check(outputs, dead, poison, stage)


@pytest.mark.parametrize("kind", list(POISON))
def test_a_poison_event_is_a_dead_letter_on_a_file(kind: str, tmp_path: Path) -> None:
    poison, stage = POISON[kind]
    events = tmp_path / "events.jsonl"
    values = [event(i) for i in range(5)] + [poison] + [event(i) for i in range(5, 10)]
    events.write_bytes(b"\n".join(values) + b"\n")
    scores, dlq = tmp_path / "scores.jsonl", tmp_path / "dlq.jsonl"
    spec = _spec(f"file://{events}", f"file://{scores}", f"file://{dlq}", time_field="ts")
    source = FileSource(
        f"file://{events}", group="poison", options={"checkpoint": str(tmp_path / "ck")}
    )
    stats = Worker(
        spec,
        service=service(),
        source=source,
        outputs=[FileSink(f"file://{scores}")],
        dead_letter=FileSink(f"file://{dlq}"),
        dedupe=None,
    ).run(until_exhausted=True)
    assert stats.events == 11
    assert source.committed == 11  # the checkpoint is past the poison event
    outputs = [orjson.loads(line) for line in scores.read_bytes().splitlines()]
    dead = [orjson.loads(line) for line in dlq.read_bytes().splitlines()]
    _check(outputs, dead, poison, stage)
