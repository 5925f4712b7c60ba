"""Monitors as observers: every part keeps the four hooks, the worker calls them in
their documented order, and one failing part does not keep the others from closing.
"""

from __future__ import annotations

import inspect
import logging

import pytest

from headrace.pipeline.drift import DriftWatch
from headrace.pipeline.monitors import (
    AccuracyObserver,
    DeadLetterScrubber,
    Observer,
    SamplesObserver,
    TracingObserver,
)
from headrace.pipeline.observe import Monitors
from headrace.pipeline.outcome import BatchOutcome
from unit.pipeline.test_worker import BAD, Rig, event

HOOKS = ("open", "on_batch", "on_settle", "close")


@pytest.mark.parametrize(
    "part", [AccuracyObserver, DeadLetterScrubber, SamplesObserver, TracingObserver, DriftWatch]
)
def test_every_part_has_the_hooks_with_the_contracts_parameters(part: type) -> None:
    for hook in HOOKS:
        wanted = list(inspect.signature(getattr(Observer, hook)).parameters)
        assert list(inspect.signature(getattr(part, hook)).parameters) == wanted, hook


class Recorder:
    """An observer of its own: what a new watcher would be."""

    def __init__(self, log: list[str], *, fail_close: bool = False) -> None:
        self.log = log
        self.fail_close = fail_close
        self.outputs = 0
        self.dead = 0

    def open(self) -> None:
        self.log.append("open")

    def on_batch(self, outcome: BatchOutcome) -> None:
        self.log.append("batch")
        self.outputs += len(outcome.outputs)
        self.dead += len(outcome.dead)

    def on_settle(self, start_ns: int) -> None:
        self.log.append("settle")

    def close(self) -> None:
        self.log.append("close")
        if self.fail_close:
            raise RuntimeError("cannot flush")


def test_a_new_observer_sees_every_batch_and_settle_between_open_and_close() -> None:
    rig = Rig()
    values = [event(i) for i in range(200)]
    values[7] = BAD["wrong type"](7)
    rig.produce(values)
    log: list[str] = []
    recorder = Recorder(log)
    monitors = Monitors(pipeline="scoring")
    monitors.observers.append(recorder)
    worker = rig.worker()
    worker.monitors = monitors
    stats = worker.run(max_events=200)
    assert log[0] == "open" and log[-1] == "close"
    assert log.count("batch") == stats.batches and "settle" in log
    assert log[-2] == "settle"  # the last batch was settled before closing
    assert (recorder.outputs, recorder.dead) == (stats.outputs, stats.dead_letters) == (199, 1)


def test_one_part_failing_to_close_does_not_keep_the_others_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    monitors = Monitors(pipeline="scoring")
    monitors.observers += [Recorder(log, fail_close=True), Recorder(log)]
    with caplog.at_level(logging.WARNING, logger="headrace.pipeline"):
        monitors.close()
    assert log == ["close", "close"]
    assert "scoring: error while closing monitors: cannot flush" in caplog.text
