"""Live accuracy: predictions kept until their ground-truth label arrives."""

from __future__ import annotations

from headrace.monitoring.accuracy import AccuracyMonitor
from headrace.pipeline.feedback import FeedbackReader
from headrace.pipeline.outcome import BatchOutcome

__all__ = ["AccuracyObserver"]


class AccuracyObserver:
    """Hands each batch's predictions to the accuracy monitor, which the feedback
    reader (a thread on the label stream) joins with their labels.

    Parameters
    ----------
    accuracy
        Where predictions wait for their labels.
    feedback
        The reader of the label stream, started by `open`, stopped by `close`.
    """

    __slots__ = ("accuracy", "feedback")

    def __init__(self, accuracy: AccuracyMonitor, feedback: FeedbackReader | None) -> None:
        self.accuracy = accuracy
        self.feedback = feedback

    def open(self) -> None:
        """Start reading labels."""
        if self.feedback is not None:
            self.feedback.start()

    def on_batch(self, outcome: BatchOutcome) -> None:
        """Keep the scored rows' predictions (and scores) under their event ids."""
        if not outcome.scored:
            return
        predictions, scores = outcome.prediction_lists()
        self.accuracy.add_predictions(
            outcome.scored_ids, predictions, scores, release=outcome.result.release
        )

    def on_settle(self, start_ns: int) -> None:
        """Nothing to do: predictions are kept as soon as they are made."""

    def close(self) -> None:
        """Stop reading labels."""
        if self.feedback is not None:
            self.feedback.close()
