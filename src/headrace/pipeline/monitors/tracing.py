"""Traces: one span per sampled event (and per failed one), from source to settle."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from headrace.monitoring.tracing import EventTracer
from headrace.pipeline.monitors.scrub import DeadLetterScrubber
from headrace.pipeline.outcome import BatchOutcome

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["TracingObserver"]

# The stages an event passes, in order, up to the one it failed at (deduplication, a
# set lookup, gets no span of its own: a span costs more than the stage).
_STAGES = ("decode", "validate", "predict", "postprocess")
_REACHED = {"decode": 1, "validate": 2, "predict": 3}


@dataclass(slots=True)
class _Traced:
    span: Span
    outcome: BatchOutcome
    send_from_ns: int


class TracingObserver:
    """Starts a span per selected event with a child per stage it passed, carries its
    context in the output's (or dead letter's) headers, and ends it once settled.

    Parameters
    ----------
    tracer
        Selects the events and makes the spans.
    scrubber
        Masks ``pii`` values in a failed span's error; None when no field is ``pii``.
    owned_provider
        A tracer provider built for this worker, shut down (exporting what is batched)
        by `close`; None when the caller owns it.
    """

    __slots__ = ("_pending", "owned_provider", "scrubber", "tracer")

    def __init__(
        self,
        tracer: EventTracer,
        *,
        scrubber: DeadLetterScrubber | None = None,
        owned_provider: Any = None,
    ) -> None:
        self.tracer = tracer
        self.scrubber = scrubber
        self.owned_provider = owned_provider
        self._pending: list[_Traced] = []

    def open(self) -> None:
        """Nothing to start: spans export through the provider."""

    def on_batch(self, outcome: BatchOutcome) -> None:
        """Start the spans of the batch's selected events; inject their context."""
        tracer = self.tracer
        failed = {index: k for k, (index, *_rest) in enumerate(outcome.failures)}
        traced = tracer.select(outcome.messages, always=failed)
        if outcome.routed is not None:
            traced = [index for index in traced if index in outcome.routed]
        if not traced:
            return
        # outputs are in row order, rows in message order: find a message's output by bisection
        output_messages = np.asarray(outcome.candidates, dtype=np.intp)[
            np.asarray(outcome.scored, dtype=np.intp)
        ]
        begun, decoded, deduped = outcome.stamps_ns
        stages = outcome.result.stages_ns
        ends = [decoded, *stages[1:]]
        starts = [begun, stages[0] if stages else deduped, *stages[1:]]
        for index in traced:
            message = outcome.messages[index]
            j = int(np.searchsorted(output_messages, index))
            output = j if j < len(output_messages) and output_messages[j] == index else None
            k = failed.get(index)
            attributes: dict[str, str | int] = {
                "messaging.destination.name": message.topic,
                "messaging.destination.partition.id": str(message.partition),
                "headrace.source": message.position,
                "headrace.release": outcome.result.release,
                "headrace.outcome": "output"
                if output is not None
                else "dead_letter"
                if k is not None
                else "duplicate",
            }
            if output is not None:
                attributes["messaging.message.id"] = outcome.scored_ids[output]
            span = tracer.begin(
                message.headers, start_ns=begun, attributes=attributes, force=k is not None
            )
            error: str | None = None
            failed_stage: str | None = None
            if output is not None:
                reached = len(_STAGES)
            elif k is not None:
                _, failed_stage, error, field_name = outcome.failures[k]
                if self.scrubber is not None:
                    error = self.scrubber.scrub(outcome, index, error)
                reached = _REACHED.get(failed_stage, 2)
                tracer.fail(span, stage=failed_stage, error=error, field=field_name)
            else:
                reached = 1  # a repeat: dropped by the dedupe stage
            reached = min(reached, len(ends))
            tracer.stages(
                span,
                [
                    (name, starts[s], ends[s], error if name == failed_stage else None)
                    for s, name in enumerate(_STAGES[:reached])
                ],
            )
            last = ends[reached - 1]
            if output is not None:
                record = outcome.outputs[output]
                record.headers = tracer.inject(span, record.headers)
            elif k is not None:
                record = outcome.dead[k]
                record.headers = tracer.inject(span, record.headers)
            else:
                tracer.end(span, end_ns=deduped)
                continue
            self._pending.append(_Traced(span, outcome, last))

    def on_settle(self, start_ns: int) -> None:
        """End the spans of the events just settled (sent, acknowledged, committed)."""
        if not self._pending:
            return
        tracer = self.tracer
        end_ns = time.time_ns()
        for traced in self._pending:
            sent = traced.outcome.sent_ns or traced.send_from_ns
            tracer.stages(
                traced.span,
                [("send", traced.send_from_ns, sent, None), ("settle", start_ns, end_ns, None)],
            )
            tracer.end(traced.span, end_ns=end_ns)
        self._pending = []

    def close(self) -> None:
        """End unsettled spans as failed; shut an owned provider down (exporting)."""
        now = time.time_ns()
        for traced in self._pending:
            self.tracer.fail(
                traced.span,
                stage="settle",
                error="not settled: the worker stopped first (the event comes again)",
                field=None,
            )
            self.tracer.end(traced.span, end_ns=now)
        self._pending = []
        if self.owned_provider is not None:
            self.owned_provider.shutdown()  # exports what is batched
