"""Fixtures of the end-to-end suite: a worker harness and a Kafka broker of a test's own
(each test module that uses the harness defines the `release` it runs)."""

from __future__ import annotations

from support.kafka import harness, private_broker

__all__ = ["harness", "private_broker"]
