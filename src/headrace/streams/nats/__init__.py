"""NATS JetStream: a source over a durable pull consumer and a sink that publishes.

nats-py speaks asyncio only, while `Source`/`Sink` are synchronous: each source and
sink runs a private event loop in a daemon thread and calls into it with
``asyncio.run_coroutine_threadsafe(...).result(timeout)``, so every call returns or
fails within a bound and the caller's thread never needs an event loop.

Streams: the topic is a subject. The stream that captures it is, in this order, the one
named by the ``stream`` option, the one the server reports for the subject, or a new one
named after the subject (every character outside ``[A-Za-z0-9_-]`` becomes ``_``, so
``payments.eu`` is kept in stream ``payments_eu``), created with ``stream_config``.

Messages: ``Message.offset`` is the stream sequence (an int), ``partition`` is 0,
``topic`` the message's subject and ``timestamp_ms`` the server's time of storage. The
key travels in the ``Headrace-Key`` header (option ``key_header``; ``Nats-*`` names are
the server's). Header names and values are kept in order; JetStream's own restrictions
are escaped so that any ``(str, bytes)`` pair round-trips:

* a name that is not an RFC 7230 token is percent-encoded (``my header`` ->
  ``my%20header``), as is ``%`` itself;
* a value that is not printable ASCII without surrounding blanks (NATS trims values
  and cannot carry line breaks; older nats-py drop non-ASCII headers) is sent as
  ``b64:<base64>``, as is one starting with ``b64:``.

NATS keeps one value per header name: when a record repeats a name, the last value wins
and a warning is logged.

Delivery: the consumer acknowledges explicitly. `NatsSource.commit` acknowledges and
waits for the server's confirmation of the last acknowledgement (the server applies the
acknowledgements of one connection in order), so a commit is durable when it returns.
Unacknowledged messages come again after ``ack_wait`` once their source stops polling
(a source that polls, paused or not, keeps its in-flight messages alive with ``+WPI``);
`NatsSource.close` gives them back at once (``-NAK``). An idle source checks every few
seconds that its consumer still exists and creates it again if it was deleted.

`probe_nats` looks the stream and the consumer up without creating either (``headrace
doctor``).
"""

from __future__ import annotations

from headrace.streams.nats.headers import KEY_HEADER
from headrace.streams.nats.probe import probe_nats
from headrace.streams.nats.sink import NatsSink
from headrace.streams.nats.source import NatsSource

__all__ = ["KEY_HEADER", "NatsSink", "NatsSource", "probe_nats"]
