"""`probe_kafka`: is the broker there, does the topic exist, how many partitions.

Metadata only, through an admin client: a consumer would join the group and make the
broker rebalance the partitions of live workers, a producer could create the topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.errors import ConfigError, DependencyMissingError
from headrace.streams.kafka.config import (
    CONSUMER_DEFAULTS,
    CONSUMER_PINNED,
    PRODUCER_DEFAULTS,
    PRODUCER_PINNED,
    _bootstrap,
    _config,
    _error_text,
    _import_kafka,
)
from headrace.streams.probe import ProbeResult, Role, describe_endpoint

__all__ = ["probe_kafka"]

# The part of a client's options an admin client needs to reach the same brokers as it
# (security, client id, address family); the rest is consumer or producer tuning.
_CONNECTION_PREFIXES = ("security.", "sasl.", "ssl.", "enable.ssl.", "client.", "broker.address.")


def probe_kafka(
    bootstrap: str,
    *,
    role: Role,
    topic: str | None = None,
    group: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """Ask the brokers for the topic's metadata; never join a group, never produce.

    Parameters
    ----------
    bootstrap
        ``host:port[,host:port]``.
    role
        ``"source"`` or ``"sink"``: whose option rules `options` must pass (a
        ``"store"`` passes the sink's).
    topic
        The topic (a source or sink without one fails, as it would at start); for a
        ``"store"``, none: only whether a broker answers.
    group
        Not checked: a group is created by the first worker that joins it.
    options
        The endpoint's librdkafka options: checked as the source or sink would check
        them; the connection ones (``security.*``, ``sasl.*``, ``ssl.*``, ...) are used.
    timeout
        Seconds to wait for the metadata.
    """
    endpoint = describe_endpoint(f"kafka://{bootstrap}", topic)
    try:
        if topic is None and role != "store":
            raise ConfigError(
                f"Kafka{role.capitalize()} needs a topic: set topic in the pipeline's {role}"
            )
        servers = _bootstrap(bootstrap)
        if role == "source":
            _config(CONSUMER_DEFAULTS, options, CONSUMER_PINNED, what="KafkaSource")
        else:
            _config(PRODUCER_DEFAULTS, options, PRODUCER_PINNED, what="KafkaSink")
        kafka = _import_kafka("the Kafka probe")
    except (ConfigError, DependencyMissingError) as exc:
        return ProbeResult(endpoint=endpoint, ok=False, detail=str(exc))
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []
    config: dict[str, Any] = {
        key: value for key, value in (options or {}).items() if key.startswith(_CONNECTION_PREFIXES)
    }
    config.update(
        {
            "bootstrap.servers": servers,
            # An admin client is a producer to librdkafka, and a producer's metadata
            # request for a missing topic lets the broker create it.
            "allow.auto.create.topics": False,
            # Failures are reported in the result, not logged (or printed) as well.
            "log_level": 0,
            "error_cb": lambda error: errors.append(_error_text(error)),
        }
    )
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(topic=topic, timeout=timeout)
    except kafka.KafkaException as exc:
        admin.poll(0)  # serves `error_cb`, whose errors say why (e.g. connection refused)
        reason = errors[-1] if errors else _error_text(exc.args[0]) if exc.args else str(exc)
        return ProbeResult(
            endpoint=endpoint,
            ok=False,
            detail=f"no Kafka broker at {servers} answered within {timeout:g}s ({reason}): "
            "check the broker is running and the bootstrap address is right",
        )
    brokers = len(metadata.brokers)
    if topic is None:
        return ProbeResult(
            endpoint=endpoint,
            ok=True,
            detail=f"{brokers} broker(s) answer, {len(metadata.topics)} topic(s)",
        )
    found = metadata.topics.get(topic)
    error = None if found is None else found.error
    if found is None or (error is not None and error.name() == "UNKNOWN_TOPIC_OR_PART"):
        return ProbeResult(
            endpoint=endpoint,
            ok=False,
            detail=f"topic '{topic}' does not exist on {servers}: create it (with the "
            "partitions you want to scale to), or fix the topic name in the pipeline",
        )
    if error is not None:
        hint = (
            "grant the client's principal DESCRIBE on the topic"
            if "AUTHORIZATION" in error.name()
            else "check the broker's log"
        )
        return ProbeResult(
            endpoint=endpoint,
            ok=False,
            detail=f"the brokers report {_error_text(error)} for topic '{topic}': {hint}",
        )
    return ProbeResult(
        endpoint=endpoint,
        ok=True,
        detail=f"{len(found.partitions)} partition(s), {brokers} broker(s)",
    )
