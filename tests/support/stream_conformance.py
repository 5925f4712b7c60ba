"""One conformance suite for every source/sink pair (memory, file, kafka, redis, nats).

A backend's test module subclasses `StreamConformance` and overrides the `backend`
fixture to return an object satisfying `Backend`; every test below then runs against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from headrace.streams.base import Message, Sink, Source


class Backend(Protocol):
    """What the suite needs from a backend under test."""

    def new_topic(self, *, partitions: int = 1) -> str:
        """A fresh, empty topic/stream/subject name."""
        ...

    def make_source(self, topic: str, *, group: str) -> Source:
        """A source reading `topic` as consumer group `group` (not yet opened)."""
        ...

    def make_sink(self, topic: str) -> Sink:
        """A sink writing to `topic` (not yet opened)."""
        ...

    def read_all(self, topic: str, *, expected: int, timeout: float) -> list[Message]:
        """Every message on `topic` (waiting up to `timeout` for `expected` of them)."""
        ...

    def produce(self, topic: str, values: Sequence[bytes], *, keys: Sequence[bytes] | None = None
                ) -> None:
        """Put raw messages on `topic` (outside the sink under test), acknowledged."""
        ...
