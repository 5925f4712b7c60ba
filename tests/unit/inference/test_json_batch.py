"""The typed batch decoder: the same columns' verdicts as the per-event path, or None."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from headrace.inference.json_batch import TypedBatchDecoder
from headrace.inference.validate import records_to_columns, validate
from headrace.release.schema import Field, Schema

SCHEMA = Schema(
    fields=[
        Field(name="amount", type="float", min=0, max=1000),
        Field(name="count", type="int", min=0),
        Field(name="card present", type="bool"),
        Field(name="merchant", type="category", values=["food", "travel"]),
        Field(name="note", type="string", required=False, nullable=True),
        Field(name="ratio", type="float", required=False, default=0.5),
        Field(name="at", type="timestamp", nullable=True),
    ]
)


def good(i: int, rng: np.random.Generator) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"e{i}" if i % 3 else i,
        "ts": 1_700_000_000 + i,
        "amount": float(rng.uniform(0, 1000)) if i % 4 else int(rng.integers(0, 1000)),
        "count": int(rng.integers(0, 50)),
        "card present": bool(i % 2),
        "merchant": ["food", "travel"][i % 2],
        "at": ["2026-11-22T10:00:00+00:00", 1_700_000_000.5, None][i % 3],
    }
    if i % 5 == 0:
        event["note"] = None if i % 10 else "hello"
    if i % 7 == 0:
        event["ratio"] = 0.25
    return event


def decoder() -> TypedBatchDecoder:
    return TypedBatchDecoder(SCHEMA, id_field="event_id", time_field="ts")


def test_a_good_batch_decodes_to_the_columns_the_per_event_path_validates_alike(
    rng: np.random.Generator,
) -> None:
    events = [good(i, rng) for i in range(300)]
    decoded = decoder().decode([orjson.dumps(e) for e in events])
    assert decoded is not None
    assert decoded.ids == [str(e["event_id"]) for e in events]
    assert decoded.times == [e["ts"] for e in events]
    assert decoded.columns["count"].dtype == np.int64  # typed, not object
    fast = validate(SCHEMA, decoded.columns, n_rows=len(events))
    slow = validate(SCHEMA, records_to_columns(events, names=SCHEMA.names), n_rows=len(events))
    assert fast.rejections == slow.rejections == []
    for name in SCHEMA.names:
        np.testing.assert_array_equal(fast.columns[name], slow.columns[name])


def test_values_that_decode_but_fail_the_schema_get_the_same_rejections(
    rng: np.random.Generator,
) -> None:
    events = [good(i, rng) for i in range(50)]
    events[3]["amount"] = 5000.0  # out of range
    events[8]["merchant"] = "casino"  # not a category value
    events[11]["note"] = "x"
    events[21]["ratio"] = 2.0  # present, overriding the default
    decoded = decoder().decode([orjson.dumps(e) for e in events])
    assert decoded is not None
    fast = validate(SCHEMA, decoded.columns, n_rows=len(events))
    slow = validate(SCHEMA, records_to_columns(events, names=SCHEMA.names), n_rows=len(events))
    assert fast.rejections == slow.rejections
    assert [r.row for r in fast.rejections] == [3, 8]


@pytest.mark.parametrize(
    "bad",
    [
        b'{"event_id": "x", "amount": ',  # undecodable
        b'{"event_id": "x", "amount": NaN}',  # NaN token
        b"[1, 2]",  # not an object
        b'{"amount": 1.0}',  # no id
        b'{"event_id": true, "amount": 1.0}',  # a bool is no id
    ],
)
def test_any_event_the_fast_path_cannot_take_sends_the_batch_down_the_per_event_path(
    bad: bytes, rng: np.random.Generator
) -> None:
    values = [orjson.dumps(good(i, rng)) for i in range(10)]
    values.insert(4, bad)
    assert decoder().decode(values) is None


def test_wrong_types_and_missing_required_fields_take_the_per_event_path(
    rng: np.random.Generator,
) -> None:
    for change in ({"amount": "12"}, {"count": 1.5}, {"card present": 1}, {"merchant": None}):
        event = good(1, rng) | change
        assert decoder().decode([orjson.dumps(event)]) is None, change
    event = good(1, rng)
    del event["merchant"]
    assert decoder().decode([orjson.dumps(event)]) is None


def test_an_id_field_that_is_also_a_feature_is_refused() -> None:
    with pytest.raises(ValueError, match="schema field"):
        TypedBatchDecoder(SCHEMA, id_field="amount")


def test_an_all_float_schema_decodes_to_matrix_columns_and_handles_nulls_alike() -> None:
    schema = Schema(
        fields=[
            Field(name="a", type="float"),
            Field(name="b", type="float", nullable=True),
            Field(name="c", type="float", required=False, default=1.5),
        ]
    )
    events = [{"a": i, "b": i / 2, "c": 0.25} for i in range(20)]
    fast = TypedBatchDecoder(schema)
    decoded = fast.decode([orjson.dumps(e) for e in events])
    assert decoded is not None and decoded.ids is None and decoded.times is None
    assert decoded.columns["a"].dtype == np.float64
    np.testing.assert_array_equal(decoded.columns["b"], np.arange(20) / 2)
    events[5]["b"] = None
    del events[6]["c"]
    decoded = fast.decode([orjson.dumps(e) for e in events])
    assert decoded is not None
    got = validate(schema, decoded.columns, n_rows=20)
    want = validate(schema, records_to_columns(events, names=schema.names), n_rows=20)
    assert got.rejections == want.rejections == []
    for name in schema.names:
        np.testing.assert_array_equal(got.columns[name], want.columns[name])
    assert got.columns["c"][6] == 1.5 and np.isnan(got.columns["b"][5])
