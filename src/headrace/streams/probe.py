"""Probing an endpoint without touching its data: is it there, and would a worker work?

`headrace doctor` probes every source, sink and store a pipeline names while its workers
may be running, so a probe has no side effects on them: it never consumes, produces,
acknowledges, creates anything or joins a consumer group (joining would make a Kafka
group rebalance live workers). It is bounded by a timeout and never raises because a
service is down, missing or misconfigured: it returns a failed `ProbeResult` that names
the endpoint (password redacted) and says what to do. Each connector has its own probe
(``headrace.streams.kafka.probe_kafka``, ...); `headrace.streams.urls.probe_endpoint`
picks the right one from the URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from headrace._redact import redact_url

__all__ = ["ProbeResult", "Role", "describe_endpoint", "probe_memory"]

Role = Literal["source", "sink", "store"]
"""What the endpoint is to a pipeline: where events come from, where outputs or dead
letters go, or where state lives (the dedupe store)."""


class ProbeResult(msgspec.Struct, kw_only=True, frozen=True):
    """The outcome of one probe.

    Parameters
    ----------
    endpoint
        The URL (password redacted) and the topic, stream, subject or file probed.
    ok
        Whether a worker could use the endpoint as configured.
    detail
        What was found (``4 partitions``), or what is wrong and what to do about it.
    """

    endpoint: str
    ok: bool
    detail: str


def describe_endpoint(url: str, topic: str | None = None) -> str:
    """``url`` with its password redacted, and the topic when there is one."""
    shown = redact_url(url)
    return f"{shown} topic '{topic}'" if topic else shown


def probe_memory(
    url: str,
    *,
    role: Role,
    topic: str | None = None,
    group: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """A ``memory://`` endpoint: always usable (it lives inside the worker's process)."""
    return ProbeResult(
        endpoint=describe_endpoint(url, topic),
        ok=True,
        detail="in-process, nothing to reach (shared only within one worker process)",
    )
