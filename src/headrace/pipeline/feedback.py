"""Reading ground-truth labels from a feedback stream, in a thread beside the worker.

Feedback events are JSON objects carrying an event id and its label
(``{"event_id": "t-91", "label": "fraud"}``), on any source headrace reads (Kafka, Redis,
NATS, files, memory). A `FeedbackReader` polls them, hands each batch to the
`AccuracyMonitor` and commits: the join lives in memory and a restarted worker has lost
its kept predictions anyway, so labels are not worth redelivering.

A malformed feedback event is counted and skipped; its contents are never logged
(labels sit next to events that may be personal data).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson

from headrace._redact import redact_url
from headrace.monitoring.accuracy import AccuracyMonitor
from headrace.streams.base import Message, Source

__all__ = ["FeedbackReader"]

log = logging.getLogger("headrace.pipeline")

_ID_TYPES = (str, int)


class FeedbackReader:
    """Polls a feedback source and joins its labels in a daemon thread.

    Parameters
    ----------
    source
        The feedback source (opened by the reader's thread, closed by `close`).
    monitor
        Where labels are joined.
    id_field, label_field
        The keys of a feedback event.
    pipeline
        For log lines.
    max_messages, poll_s
        Batch size and wait of each poll.
    """

    def __init__(
        self,
        source: Source,
        *,
        monitor: AccuracyMonitor,
        id_field: str,
        label_field: str,
        pipeline: str,
        max_messages: int = 1000,
        poll_s: float = 0.2,
    ) -> None:
        self.source = source
        self.monitor = monitor
        self.id_field = id_field
        self.label_field = label_field
        self.pipeline = pipeline
        self.max_messages = max_messages
        self.poll_s = poll_s
        self.read = 0
        self.malformed = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened = False

    def start(self) -> None:
        """Start reading in a daemon thread (which opens the source, retrying until it can:
        a feedback outage must not keep the worker from scoring)."""
        if self._thread is not None:
            return
        self._opened = False
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"headrace-feedback-{self.pipeline}", daemon=True
        )
        self._thread.start()

    def parse(self, messages: list[Message]) -> tuple[list[str], list[Any]]:
        """The ids and labels of a batch; malformed events are counted and skipped."""
        ids: list[str] = []
        labels: list[Any] = []
        bad: list[str] = []
        for message in messages:
            try:
                event = orjson.loads(message.value)
            except orjson.JSONDecodeError:
                bad.append(f"{message.position}: not JSON")
                continue
            if not isinstance(event, dict):
                bad.append(f"{message.position}: not a JSON object")
                continue
            event_id = event.get(self.id_field)
            if not isinstance(event_id, _ID_TYPES) or isinstance(event_id, bool):
                bad.append(f"{message.position}: no `{self.id_field}` (str or int)")
                continue
            if self.label_field not in event:
                bad.append(f"{message.position}: no `{self.label_field}`")
                continue
            ids.append(str(event_id))
            labels.append(event[self.label_field])
        if bad:
            self.malformed += len(bad)
            log.warning(
                "%s: %d malformed feedback events skipped, first at %s",
                self.pipeline,
                len(bad),
                bad[0],
            )
        return ids, labels

    def poll_once(self, *, timeout: float) -> int:
        """Read, join and commit one batch; returns how many feedback events it had."""
        messages = self.source.poll(max_messages=self.max_messages, timeout=timeout)
        if not messages:
            return 0
        ids, labels = self.parse(messages)
        if ids:
            self.monitor.add_labels(ids, labels)
        self.read += len(messages)
        self.source.commit(messages)
        return len(messages)

    def _run(self) -> None:
        backoff = self.poll_s
        while not self._stop.is_set():
            try:
                if not self._opened:
                    self.source.open()
                    self._opened = True
                self.poll_once(timeout=self.poll_s)
                backoff = self.poll_s
            except Exception as exc:
                # Live accuracy is a view on the model, not part of scoring: a feedback
                # outage is logged and retried, never allowed to stop the worker.
                self.failures += 1
                log.warning(
                    "%s: feedback source %s failed, retrying in %.1f s: %s: %s",
                    self.pipeline,
                    redact_url(self.source.url),
                    backoff,
                    type(exc).__name__,
                    exc,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def close(self) -> None:
        """Stop the thread and close the source."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=30.0)
        self._thread = None
        if self._opened:
            self.source.close()
