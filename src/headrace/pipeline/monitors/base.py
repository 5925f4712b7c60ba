"""The contract every worker monitor keeps: four hooks, called by the worker's loop.

A monitor watches; it never decides. Whatever it does, the worker scores, sends and
commits the same events, so a monitor that cannot keep up drops its own work (a sample,
a span), never the batch.
"""

from __future__ import annotations

from typing import Protocol

from headrace.pipeline.outcome import BatchOutcome

__all__ = ["Observer"]


class Observer(Protocol):
    """One cross-cutting watcher of a worker (traces, samples, accuracy, drift, ...).

    The worker calls the hooks from its own thread, in this order: `open` once before
    its loop, `on_batch` once per batch, `on_settle` after each settle, `close` once
    when it stops (also after a failure). None of them may raise for something one event
    caused; a raise from `open` stops the worker before it polls.
    """

    def open(self) -> None:
        """Start background work (writer threads, readers, sinks) before the first batch.

        Apart from the constructor so a worker that is built but never run (a check, a
        test) starts no thread.
        """

    def on_batch(self, outcome: BatchOutcome) -> object:
        """Read one batch's outcome, after its records were made and before they are
        sent: the only moment a monitor may change the records' headers (trace context)
        or a dead letter's ``error`` (masking), and nothing else. Must be cheap: it runs
        on the hot path, per batch. A return value is ignored."""

    def on_settle(self, start_ns: int) -> None:
        """Every event of the batches seen since the last call was acknowledged by the
        sinks and committed; `start_ns` (`time.time_ns`) is when settling began."""

    def close(self) -> None:
        """Stop background work and flush what is buffered; unsettled work ends as not
        settled (its events come again). Called once; the monitor is not used after."""
