"""An in-process broker with Kafka's shape: a fake users and tests can rely on.

`MemoryBroker` keeps named topics of N partitions, each an append-only list of messages
with offsets ``0, 1, 2, ...``, and consumer groups with a committed offset per
partition. `MemorySource` and `MemorySink` speak the `Source`/`Sink` contract over it, so
a pipeline runs unchanged on ``memory://`` in a test or a demo and on ``kafka://`` in
production.

Brokers are found by name: ``memory://demo/transactions`` is topic ``transactions`` on
``broker("demo")``, created on first use and shared by the whole process (every thread).

Groups behave as Kafka's do, minus the network: the members of a group split the
partitions of a topic round-robin in the order they joined (partition ``p`` goes to
member ``p % n``); when a member joins or leaves, the assignment is recomputed and each
member learns of it at its next `MemorySource.poll`, which first calls its `on_revoke`
callback with the partitions it loses and only then hands them over. A partition's new
owner starts at the group's committed offset, so whatever was delivered but not
committed is delivered again (at-least-once). A member that stops polling without
closing keeps its partitions, as a Kafka member would until its session expired.

Messages are kept for the life of the broker (there is no retention). A broker serves any
number of threads; each source or sink is meant for one thread, as a Kafka client is.
"""

from __future__ import annotations

from headrace.streams.memory.brokers import MemoryBroker, broker, partition_for_key
from headrace.streams.memory.sink import MemorySink
from headrace.streams.memory.source import MemorySource

__all__ = ["MemoryBroker", "MemorySink", "MemorySource", "broker", "partition_for_key"]
