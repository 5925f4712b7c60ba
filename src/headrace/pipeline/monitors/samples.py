"""Payload samples: a share of scored rows and every failure, PII masked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.monitoring.samples import PayloadSampler
from headrace.pipeline.outcome import BatchOutcome

__all__ = ["SamplesObserver"]


class SamplesObserver:
    """Hands the sampler the rows it chooses and every dead letter's event.

    Parameters
    ----------
    sampler
        Chooses, masks and buffers rows; its writer thread is started by `open` and
        flushed by `close`.
    """

    __slots__ = ("sampler",)

    def __init__(self, sampler: PayloadSampler) -> None:
        self.sampler = sampler

    def open(self) -> None:
        """Start the samples writer."""
        self.sampler.start()

    def on_batch(self, outcome: BatchOutcome) -> None:
        """Sample the chosen scored rows and every failed event."""
        sampler = self.sampler
        release = outcome.result.release
        chosen = sampler.choose(len(outcome.scored))
        if len(chosen):
            predictions, scores = outcome.prediction_lists()
            for j in chosen:
                row = outcome.scored[j]
                message = outcome.messages[outcome.candidates[row]]
                sampler.add(
                    event_id=outcome.scored_ids[j],
                    release=release,
                    at_ms=outcome.at_ms,
                    source=message.position,
                    features=outcome.features(row),
                    prediction=predictions[j],
                    score=None if scores is None else scores[j],
                )
        if not outcome.failures:
            return
        row_of = {index: row for row, index in enumerate(outcome.candidates)}
        for index, stage, error, _field in outcome.failures:
            failed_row = row_of.get(index)
            if failed_row is not None:
                event_id: str | None = outcome.event_ids[failed_row]
                features: Mapping[str, Any] | None = outcome.features(failed_row)
            else:  # failed before it had a row (undecodable, too large, no id)
                event_id, features = None, outcome.features_of(index) or None
            sampler.add(
                event_id=event_id,
                release=release,
                at_ms=outcome.at_ms,
                source=outcome.messages[index].position,
                features=features,
                stage=stage,
                error=error,
            )

    def on_settle(self, start_ns: int) -> None:
        """Nothing to do: samples do not wait for the commit."""

    def close(self) -> None:
        """Flush the buffered samples and stop the writer."""
        self.sampler.close()
