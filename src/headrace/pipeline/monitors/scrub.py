"""Masking ``pii`` values a model quoted in its exception out of dead letters."""

from __future__ import annotations

import orjson

from headrace.monitoring.samples import PiiMasker
from headrace.pipeline.outcome import BatchOutcome

__all__ = ["DeadLetterScrubber"]


class DeadLetterScrubber:
    """Masks ``pii`` values in the ``error`` of dead letters of model failures.

    Validation reasons never show values, but a model's exception may quote one. Runs
    first among the monitors, so the traces and samples read the masked reason too.

    Parameters
    ----------
    masker
        The schema's ``pii`` fields and how to mask them.
    """

    __slots__ = ("masker",)

    def __init__(self, masker: PiiMasker) -> None:
        self.masker = masker

    def open(self) -> None:
        """Nothing to start."""

    def on_batch(self, outcome: BatchOutcome) -> None:
        """Rewrite the ``error`` of each dead letter of stage ``predict`` that quotes a
        ``pii`` value, before it is sent."""
        for k, (index, stage, error, field_name) in enumerate(outcome.failures):
            if stage != "predict":
                continue
            scrubbed = self.scrub(outcome, index, error)
            if scrubbed == error:
                continue
            outcome.failures[k] = (index, stage, scrubbed, field_name)
            record = outcome.dead[k]
            letter = orjson.loads(record.value)
            letter["error"] = scrubbed
            record.value = orjson.dumps(letter)

    def scrub(self, outcome: BatchOutcome, index: int, error: str) -> str:
        """`error` of message `index` with that event's ``pii`` values masked."""
        if not self.masker.fields:
            return error
        try:
            row = outcome.candidates.index(index)
        except ValueError:
            return error
        return self.masker.scrub(error, outcome.features(row))

    def on_settle(self, start_ns: int) -> None:
        """Nothing to do."""

    def close(self) -> None:
        """Nothing to stop."""
