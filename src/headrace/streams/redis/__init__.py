"""Redis Streams: a source over a consumer group and a sink that appends entries.

Wire format (one stream entry per message, binary-safe field/value pairs)::

    value   -> the message bytes                      (field name: option ``value_field``)
    key     -> the message key, absent when None      (option ``key_field``)
    h:NAME  -> one field per header, in order, repeats allowed (prefix: ``header_prefix``)

Fields written by other producers that are neither the value nor the key become headers
under their own names; an entry without a value field arrives with an empty value (the
pipeline dead-letters it with every field kept), never silently dropped.

A producer that writes the event as the entry's own fields (``XADD events * event_id e1
amount 3.5``) is read with ``value_field: "*"``: the fields other than the key and the
prefixed headers become a JSON object of text, marked ``content-type: csv`` so the
pipeline types each value per its schema field, as it does CSV cells (sources only).

Consumer groups are Redis's unit of sharing: every member reads new entries (``>``),
each entry goes to one member and stays in that member's pending list (PEL) until it is
acknowledged (`RedisStreamSource.commit` = ``XACK``). Redis has no rebalance; instead:

* a restarted member re-reads its own pending entries first (give it a stable name with
  the ``consumer`` option, e.g. the pod name, for this to apply);
* members claim entries that sat unacknowledged longer than ``claim_idle_ms`` in anyone's
  PEL (``XAUTOCLAIM``), so the events of a crashed member are not stuck. A member that
  keeps polling (paused or not) keeps its own in-flight entries fresh, so entries held
  across polls are not taken from it; one batch must still finish within
  ``claim_idle_ms``, or another member processes it too (at-least-once);
* `RedisStreamSource.close` hands its unacknowledged entries back (marks them idle at
  once), so the next member picks them up without waiting for ``claim_idle_ms``.

``Message.offset`` is the entry id (``"1700000000000-0"``), ``partition`` is 0, ``topic``
is the stream key and ``timestamp_ms`` the id's time part (the server's clock at ``XADD``).
Needs Redis 6.2 or later (``XAUTOCLAIM``). `probe_redis` checks the server, the stream
and the group with read-only commands (``headrace doctor``).
"""

from __future__ import annotations

from headrace.streams.redis.probe import probe_redis
from headrace.streams.redis.sink import RedisStreamSink
from headrace.streams.redis.source import RedisStreamSource

__all__ = ["RedisStreamSink", "RedisStreamSource", "probe_redis"]
