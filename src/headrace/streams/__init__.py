"""Streams: where events come from and where outputs go, behind one small contract.

A worker polls a `Source` for `Message`s, sends `OutRecord`s to every `Sink`, waits for
each sink's `Sink.flush`, and only then commits the batch with `Source.commit`: the
at-least-once promise (see `headrace.streams.base`). `open_source` and `open_sink` turn a
URL into the right implementation:

- ``memory://`` — `MemoryBroker`, `MemorySource`, `MemorySink`: an in-process broker with
  partitions and consumer groups, for tests, demos and users' own tests (`broker` finds
  one by name);
- ``file://`` — `FileSource` (JSONL, CSV, Parquet, with checkpoints and replay) and
  `FileSink` (JSONL, Parquet);
- ``kafka://``, ``redis://``, ``nats://`` — ``headrace.streams.kafka.KafkaSource`` /
  ``KafkaSink``, ``headrace.streams.redis.RedisStreamSource`` / ``RedisStreamSink`` and
  ``headrace.streams.nats.NatsSource`` / ``NatsSink``. They need optional packages
  (``pip install 'headrace[kafka]'``, ``[redis]``, ``[nats]``), so they are imported from
  their modules, not from here.

`probe_endpoint` checks any of them without side effects on running workers (``headrace
doctor``), returning a `ProbeResult`.
"""

from __future__ import annotations

from headrace.streams.base import Message, OutRecord, Partition, RevokeCallback, Sink, Source
from headrace.streams.file import (
    CONTENT_TYPE_HEADER,
    CSV_CONTENT_TYPE,
    CSV_ERROR_HEADER,
    FileSink,
    FileSource,
    checkpoint_path,
    probe_file,
)
from headrace.streams.memory import (
    MemoryBroker,
    MemorySink,
    MemorySource,
    broker,
    partition_for_key,
)
from headrace.streams.probe import ProbeResult, Role, describe_endpoint, probe_memory
from headrace.streams.urls import SCHEMES, open_sink, open_source, probe_endpoint

__all__ = [
    "CONTENT_TYPE_HEADER",
    "CSV_CONTENT_TYPE",
    "CSV_ERROR_HEADER",
    "SCHEMES",
    "FileSink",
    "FileSource",
    "MemoryBroker",
    "MemorySink",
    "MemorySource",
    "Message",
    "OutRecord",
    "Partition",
    "ProbeResult",
    "RevokeCallback",
    "Role",
    "Sink",
    "Source",
    "broker",
    "checkpoint_path",
    "describe_endpoint",
    "open_sink",
    "open_source",
    "partition_for_key",
    "probe_endpoint",
    "probe_file",
    "probe_memory",
]
