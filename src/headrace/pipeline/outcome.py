"""What one batch came to: the struct the worker builds, by keyword, after the sinks'
records are made and before they are sent, and hands to the monitors.

It lives apart from the worker and the monitors so both depend on it and not on each
other, and so a new stage (enrich, route) adds a named field instead of shifting a
position in a long argument list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from headrace.inference.service import InferenceResult
from headrace.pipeline.decode import Failure
from headrace.streams.base import Message, OutRecord
from headrace.types import Columns

__all__ = ["BatchOutcome"]


@dataclass(slots=True, kw_only=True)
class BatchOutcome:
    """One batch as the worker made of it (rows are the events that passed decoding and
    deduplication; `candidates` maps a row to its message).

    Attributes
    ----------
    messages
        The batch as polled.
    candidates, event_ids
        Per row: its index in `messages`, its event id.
    records
        Per row, the decoded event (the per-event path), or empty.
    columns
        The fast path's decoded columns, indexed like `messages`, or None.
    result
        The inference result over the rows.
    scored, scored_ids
        The rows with an output, and their event ids (aligned with `outputs`).
    event_times_ms
        Per scored row, the event time stamped on its output (None when unknown).
    failures
        ``(message index, stage, error, field)`` per dead letter (aligned with `dead`).
    outputs, dead
        The records about to be sent; a monitor may replace their headers.
    deduplicated
        How many messages were dropped as repeats of events already emitted.
    stamps_ns
        `time.time_ns` at the batch's start, after decoding, after deduplication.
    at_ms
        The processing time stamped on the outputs.
    sent_ns
        Set by the worker once the records were handed to the sinks (monitors only).
    routed
        During a rollout a batch is scored in parts, one outcome each: the messages this
        outcome speaks for (a monitor that walks `messages` reads only these). None: all.
    """

    messages: Sequence[Message]
    candidates: list[int]
    event_ids: list[str]
    records: list[Any]
    columns: Columns | None
    result: InferenceResult
    scored: list[int]
    scored_ids: list[str]
    event_times_ms: list[int | None]
    failures: list[Failure]
    outputs: list[OutRecord]
    dead: list[OutRecord]
    deduplicated: int
    stamps_ns: tuple[int, int, int]
    at_ms: int
    sent_ns: int = 0
    routed: frozenset[int] | None = None
    _lists: tuple[list[Any], list[float] | None] | None = field(default=None, repr=False)

    def prediction_lists(self) -> tuple[list[Any], list[float] | None]:
        """The predictions and scores (or None) as Python lists, aligned with `scored`:
        made once per batch, however many monitors read them."""
        if self._lists is None:
            result = self.result
            scores = None if result.scores is None else result.scores.tolist()
            self._lists = (result.predictions.tolist(), scores)
        return self._lists

    def features(self, row: int) -> Mapping[str, Any]:
        """The decoded fields of one row."""
        if self.records:
            record = self.records[row]
            return record if isinstance(record, Mapping) else {}
        return self.features_of(self.candidates[row])

    def features_of(self, message: int) -> Mapping[str, Any]:
        """The decoded fields of one message (fast path only; else empty)."""
        if self.columns is None:
            return {}
        return {name: column[message] for name, column in self.columns.items()}
