"""The feedback reader: labels joined, malformed events counted without their contents in
the logs, a failing source retried without stopping anything."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest

from headrace.errors import StreamUnavailableError
from headrace.monitoring.accuracy import AccuracyMonitor
from headrace.pipeline.feedback import FeedbackReader
from headrace.streams.base import OutRecord
from headrace.streams.memory import MemorySource, broker


def reader(topic_url: str, monitor: AccuracyMonitor, **options: Any) -> FeedbackReader:
    source = MemorySource(topic_url, group="feedback")
    return FeedbackReader(
        source, monitor=monitor, id_field="id", label_field="label", pipeline="p", **options
    )


def test_labels_are_joined_and_malformed_events_counted_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"fb-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    monitor = AccuracyMonitor("fraud", classes=["legit", "fraud"])
    monitor.add_predictions(["a", "b"], ["fraud", "legit"], [0.9, 0.2], release="r:1")
    personal = "jane.doe@example.org"
    memory.append(
        "labels",
        [
            OutRecord(value=orjson.dumps({"id": "a", "label": "fraud"})),
            OutRecord(value=orjson.dumps({"id": 7, "label": 0})),  # an int id is text too
            OutRecord(value=orjson.dumps({"id": "b", "label": True, "email": personal})),
            OutRecord(value=f'{{"id": "{personal}", "label":'.encode()),  # not JSON
            OutRecord(value=orjson.dumps([personal])),  # not an object
            OutRecord(value=orjson.dumps({"label": personal})),  # no id
            OutRecord(value=orjson.dumps({"id": True, "label": 1})),  # a bool is no id
            OutRecord(value=orjson.dumps({"id": personal})),  # no label
        ],
    )
    feedback = reader(f"memory://{name}/labels", monitor)
    feedback.source.open()
    assert feedback.poll_once(timeout=1.0) == 8
    assert (feedback.read, feedback.malformed) == (8, 5)
    stats = monitor.stats()
    assert (stats.joined, stats.unknown) == (2, 1)
    assert monitor.report()["r:1"].accuracy == 0.5  # b was legit, its label says fraud
    assert "5 malformed feedback events skipped, first at labels[0]@3: not JSON" in caplog.text
    assert personal not in caplog.text
    assert memory.lag("feedback", "labels") == 0  # committed
    feedback.source.close()


class FailingSource(MemorySource):
    def poll(self, *, max_messages: int, timeout: float) -> list[Any]:
        self.polls = getattr(self, "polls", 0) + 1
        raise StreamUnavailableError("broker unreachable")


def test_a_failing_source_is_retried_and_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    name = f"fb-{uuid.uuid4().hex[:8]}"
    broker(name).create_topic("labels")
    monitor = AccuracyMonitor(1, classes=[0, 1])
    source = FailingSource(f"memory://{name}/labels", group="feedback")
    feedback = FeedbackReader(
        source, monitor=monitor, id_field="id", label_field="y", pipeline="p", poll_s=0.01
    )
    feedback.start()
    deadline = time.monotonic() + 10
    while feedback.failures < 3:
        assert time.monotonic() < deadline, "the reader stopped retrying"
        time.sleep(0.01)
    feedback.close()
    assert "feedback source memory://" in caplog.text and "retrying in" in caplog.text
    failures = feedback.failures
    time.sleep(0.1)
    assert feedback.failures == failures  # the thread is gone


class LateBroker(MemorySource):
    """A feedback source whose broker answers only from the third try on."""

    tries = 0

    def open(self, *, on_revoke: Any = None) -> None:
        type(self).tries += 1
        if type(self).tries < 3:
            raise StreamUnavailableError("broker not up yet")
        super().open(on_revoke=on_revoke)


def test_a_source_that_cannot_open_yet_is_retried_in_the_thread() -> None:
    name = f"fb-{uuid.uuid4().hex[:8]}"
    broker(name).append("labels", [OutRecord(value=orjson.dumps({"id": "a", "y": 1}))])
    monitor = AccuracyMonitor(1, classes=[0, 1])
    monitor.add_predictions(["a"], [1], [0.7], release="r:1")
    source = LateBroker(f"memory://{name}/labels", group="feedback")
    feedback = FeedbackReader(
        source, monitor=monitor, id_field="id", label_field="y", pipeline="p", poll_s=0.01
    )
    feedback.start()  # returns at once: the worker is not held up by its feedback broker
    deadline = time.monotonic() + 10
    while monitor.stats().joined < 1:
        assert time.monotonic() < deadline, "the label was never joined"
        time.sleep(0.01)
    feedback.close()
    assert LateBroker.tries == 3 and feedback.failures == 2
