"""Properties of event decoding and validation (issue 10, "Property tests and fuzzing").

For any batch of events, made of arbitrary bytes, arbitrary JSON (nesting, huge numbers,
NaN/Infinity tokens, unicode) or near-valid events:

- the typed fast path and the per-event path agree: same scored rows, same rejections
  with the same stages and reasons;
- scored rows and rejections partition the batch;
- nothing raises, in decoding nor in the whole `Worker.process`.

Examples are bounded (150 a property) so CI spends seconds here;
``HEADRACE_PROPERTY_EXAMPLES=N`` runs N by hand, and the atheris harness in ``fuzz/``
runs the same entry point for as long as one likes.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.pipeline.test_worker import Threshold

from headrace.inference.service import InferenceService
from headrace.inference.validate import records_to_columns
from headrace.pipeline.decode import DecodedEvents, EventDecoder
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.streams.base import Message
from headrace.streams.memory import MemorySink, MemorySource, broker

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", min=0, max=1000),
        Field(name="merchant", type="category", values=["food", "travel"]),
        Field(name="count", type="int", required=False, default=0),
        Field(name="note", type="string", nullable=True, required=False),
    ]
)
SERVICE = InferenceService(
    Threshold(),
    schema=SCHEMA,
    inputs=["amount", "merchant", "count"],
    config=ReleaseConfig(threshold=0.5, labels=["legit", "fraud"]),
    release="fraud:1",
    release_digest="d" * 64,
)
DECODER = EventDecoder(SCHEMA, id_field="event_id", time_field="ts", max_event_bytes=8192)
# CI runs 150 examples a property (seconds); a long run by hand:
# HEADRACE_PROPERTY_EXAMPLES=5000 pytest tests/unit/pipeline/test_decode_properties.py
EXAMPLES = int(os.environ.get("HEADRACE_PROPERTY_EXAMPLES", "150"))
CI = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)

# -- strategies -------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["food", "travel", "1.5", "", "2026-01-01T00:00:00", "\ud800"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


def _nested(depth: int, *, objects: bool) -> bytes:
    if objects:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"]" * depth


@st.composite
def _near_valid(draw: st.DrawFn) -> bytes:
    """An event that is valid, or one field away from it (missing, odd value, odd type)."""
    body: dict[str, Any] = {
        "event_id": draw(st.sampled_from(["e1", "e2", 7, 2**40])),
        "amount": draw(st.floats(min_value=0, max_value=1000)),
        "merchant": draw(st.sampled_from(["food", "travel"])),
    }
    if draw(st.booleans()):
        body["count"] = draw(st.integers(min_value=-(2**31), max_value=2**31))
    if draw(st.booleans()):
        body["note"] = draw(st.none() | st.text(max_size=8))
    if draw(st.booleans()):
        body["ts"] = draw(
            st.integers(min_value=0, max_value=2_000_000_000)
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.integers(min_value=-(2**80), max_value=2**80)
            | st.sampled_from(["2026-01-01T00:00:00+00:00", "not a time"])
        )
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        key = draw(st.sampled_from(["event_id", "amount", "merchant", "count", "note", "ts"]))
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(_JSON)
    # Python's json writes NaN/Infinity tokens and keeps lone surrogates as escapes
    return json.dumps(body).encode()


_EVENT = (
    _near_valid()
    | _near_valid()
    | _JSON.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
    | st.builds(_nested, st.integers(min_value=1, max_value=3000), objects=st.booleans())
)
_BATCH = st.lists(_EVENT, min_size=1, max_size=12)


def _messages(values: list[bytes]) -> list[Message]:
    return [Message(value=v, topic="events", offset=i) for i, v in enumerate(values)]


def _outcome(decoded: DecodedEvents) -> dict[int, tuple[str, ...]]:
    """Each event's fate: ("scored", id, prediction, time) or (stage, reason)."""
    n = len(decoded.candidates)
    if decoded.columns is not None:
        result = SERVICE.infer(decoded.columns, n_rows=n, coerce_strings=decoded.coerce_strings)
    elif decoded.coerce_strings:
        columns = records_to_columns(decoded.records, names=SCHEMA.names)
        result = SERVICE.infer(columns, n_rows=n, coerce_strings=True)
    else:
        result = SERVICE.infer_records(decoded.records)
    fate: dict[int, tuple[str, ...]] = {}
    for i, stage, reason, _ in decoded.failures:
        assert i not in fate
        fate[i] = (stage, reason)
    for rejection in result.rejections:
        i = decoded.candidates[rejection.row]
        assert i not in fate
        fate[i] = (rejection.stage, rejection.reason)
    for k, r in enumerate(result.rows.tolist()):
        i = decoded.candidates[r]
        assert i not in fate
        fate[i] = (
            "scored",
            decoded.ids[r],
            str(result.predictions[k]),
            str(decoded.times_ms[r]),
        )
    return fate


@CI
@given(_BATCH | st.lists(_near_valid(), min_size=1, max_size=3))
def test_both_paths_agree_and_partition_the_batch(values: list[bytes]) -> None:
    messages = _messages(values)
    fast = DECODER._decode_fast(messages, csv=False)
    slow = DECODER._decode_each(messages, csv=False)
    slow_fate = _outcome(slow)
    assert sorted(slow_fate) == list(range(len(values)))  # a partition: each once
    if fast is not None:
        assert _outcome(fast) == slow_fate


_CELL = st.sampled_from(["", "1.5", "12", "food", "travel", "nan", "1e400", "true", "x"]) | st.text(
    max_size=6
)


@st.composite
def _csv_row(draw: st.DrawFn) -> bytes:
    """A CSV row as a file source sends it: a JSON object of text cells."""
    row = {
        name: draw(_CELL)
        for name in ("event_id", "amount", "merchant", "count", "note", "ts")
        if draw(st.integers(min_value=0, max_value=5)) > 0
    }
    if draw(st.booleans()):
        row["amount"] = str(draw(st.floats(min_value=0, max_value=1000)))
        row["merchant"] = "food"
        row["event_id"] = draw(st.text(min_size=1, max_size=4))
    return json.dumps(row).encode()


@CI
@given(st.lists(_csv_row(), min_size=1, max_size=12))
def test_both_paths_agree_on_csv_rows(values: list[bytes]) -> None:
    messages = [
        Message(value=v, topic="f.csv", offset=i, headers=[("content-type", b"csv")])
        for i, v in enumerate(values)
    ]
    fast = DECODER._decode_fast(messages, csv=True)
    slow = DECODER._decode_each(messages, csv=True)
    slow_fate = _outcome(slow)
    assert sorted(slow_fate) == list(range(len(values)))
    if fast is not None:
        assert _outcome(fast) == slow_fate


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_near_valid(), min_size=1, max_size=12))
def test_the_fast_path_takes_valid_batches(values: list[bytes]) -> None:
    """Guards the property above from being vacuous: good batches do take the fast path."""
    good = []
    for value in values:
        event = json.loads(value) if b"NaN" not in value and b"Infinity" not in value else {}
        # bool is an int to isinstance, not to msgspec (nor JSON): count it as neither
        no_bool = not any(isinstance(event.get(k), bool) for k in ("event_id", "count", "ts"))
        fields_ok = (
            no_bool
            and isinstance(event.get("event_id"), str | int)
            and isinstance(event.get("amount"), float)
            and event.get("merchant") in ("food", "travel")
            and isinstance(event.get("count", 0), int)
            and isinstance(event.get("note"), str | None)
            and isinstance(event.get("ts", 0), int)
            and 0 <= event.get("ts", 0) <= 2_000_000_000
        )
        good.append(fields_ok)
    if all(good) and value_is_utf8(values):
        assert DECODER._decode_fast(_messages(values), csv=False) is not None


def value_is_utf8(values: list[bytes]) -> bool:
    """No lone surrogate escape (msgspec refuses them: the per-event path explains)."""
    try:
        json.dumps([json.loads(v) for v in values], ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


@CI
@given(_BATCH)
def test_nothing_one_event_sends_escapes_the_worker(values: list[bytes]) -> None:
    name = f"prop-{uuid.uuid4().hex[:8]}"
    b = broker(name)
    spec = pipeline_spec_from_dict(
        {
            "name": "prop",
            "model": "fraud:1",
            "source": {"url": f"memory://{name}/events", "group": "prop"},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "event_id",
            "event_time_field": "ts",
            "limits": {"max_event_bytes": 8192},
        }
    )
    scores, dlq = MemorySink(f"memory://{name}/scores"), MemorySink(f"memory://{name}/dlq")
    worker = Worker(
        spec,
        service=SERVICE,
        source=MemorySource(f"memory://{name}/events", group="prop"),
        outputs=[scores],
        dead_letter=dlq,
        dedupe=None,
    )
    scores.open()
    dlq.open()
    worker.process(_messages(values))
    scores.flush(timeout=5)
    dlq.flush(timeout=5)
    assert worker.stats.outputs + worker.stats.dead_letters == len(values)
    for letter in b.messages("dlq"):
        body = orjson.loads(letter.value)
        assert body["stage"] in ("decode", "validate", "predict", "output") and body["error"]
    for output in b.messages("scores"):
        at = orjson.loads(output.value)["event_time_ms"]
        assert at is None or (isinstance(at, int) and abs(at) < 2**63)
