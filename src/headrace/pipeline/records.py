"""What a worker writes: output records and dead-letter records, as JSON bytes.

An output carries the event id, prediction, score (a binary classifier's P(positive
class)), release and digest, event and processing times, every class's probability when
the pipeline asks for them (``probabilities: true``), and an idempotency key (event id +
release digest) that is also set as a header, so consumers can drop repeats after a
crash. A dead letter carries the error, the stage, where the event came from and its
original bytes (base64); the original key and headers are kept on the record itself.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from headrace.streams.base import Message, OutRecord

__all__ = [
    "IDEMPOTENCY_HEADER",
    "RELEASE_HEADER",
    "STAGE_HEADER",
    "dead_letter_record",
    "idempotency_key",
    "output_records",
]

IDEMPOTENCY_HEADER = "headrace-idempotency-key"
RELEASE_HEADER = "headrace-release"
STAGE_HEADER = "headrace-error-stage"


class _Output(msgspec.Struct, gc=False, omit_defaults=True):
    """An output record's JSON body, in key order (``score`` omitted when the model has
    none). A struct encodes faster than a dict, and this runs once per event."""

    event_id: str
    prediction: Any
    release: str
    release_digest: str
    event_time_ms: int | None
    processed_at_ms: int
    idempotency_key: str
    score: float | None = None
    probabilities: dict[str, float] | None = None


_encode = msgspec.json.Encoder().encode


def idempotency_key(event_id: str, release_digest: str) -> str:
    """``<event id>:<release digest>``: the same event scored by the same release."""
    return f"{event_id}:{release_digest}"


def output_records(
    messages: Sequence[Message],
    *,
    event_ids: Sequence[str],
    predictions: list[Any],
    scores: list[float] | None,
    event_times_ms: Sequence[int | None],
    release: str,
    release_digest: str,
    processed_at_ms: int,
    probabilities: Sequence[dict[str, float]] | None = None,
) -> list[OutRecord]:
    """One output record per scored event (all sequences aligned)."""
    encode = _encode
    release_header = (RELEASE_HEADER, release.encode())
    records: list[OutRecord] = []
    for i, message in enumerate(messages):
        event_id = event_ids[i]
        key = f"{event_id}:{release_digest}"  # idempotency_key(), inlined: once per event
        body = _Output(
            event_id,
            predictions[i],
            release,
            release_digest,
            event_times_ms[i],
            processed_at_ms,
            key,
            None if scores is None else scores[i],
            None if probabilities is None else probabilities[i],
        )
        encoded_key = key.encode()
        records.append(
            OutRecord(
                value=encode(body),
                key=message.key if message.key is not None else event_id.encode(),
                headers=[*message.headers, (IDEMPOTENCY_HEADER, encoded_key), release_header],
            )
        )
    return records


def dead_letter_record(
    message: Message,
    *,
    stage: str,
    error: str,
    field: str | None,
    pipeline: str,
    release: str,
    at_ms: int,
) -> OutRecord:
    """A dead letter: why, where, and the original bytes, key and headers."""
    payload = {
        "error": error,
        "stage": stage,
        "field": field,
        "source": {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "position": message.position,
        },
        "payload": base64.b64encode(message.value).decode("ascii"),
        "pipeline": pipeline,
        "release": release,
        "at_ms": at_ms,
    }
    try:
        value = orjson.dumps(payload)
    except orjson.JSONEncodeError:  # a reason quoting a lone surrogate: escape it
        payload["error"] = error.encode("utf-8", "backslashreplace").decode("utf-8")
        value = orjson.dumps(payload)
    return OutRecord(
        value=value,
        key=message.key,
        headers=[*message.headers, (STAGE_HEADER, stage.encode())],
    )
