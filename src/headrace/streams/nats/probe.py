"""`probe_nats`: does the server answer, which stream captures the subject, its consumer.

Look-ups only (``STREAM.INFO``, ``CONSUMER.INFO``): a missing stream or consumer is
reported, not created (the source and the sink create what they need when they start).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.errors import ConfigError, DependencyMissingError, StreamError
from headrace.streams.nats.connection import (
    _close_quietly,
    _import_nats,
    _Loop,
    _Settings,
    _stream_name,
    _subject_covers,
)
from headrace.streams.nats.sink import _SINK_OPTIONS
from headrace.streams.nats.source import _SOURCE_OPTIONS
from headrace.streams.probe import ProbeResult, Role, describe_endpoint

__all__ = ["probe_nats"]


def probe_nats(
    url: str,
    *,
    role: Role,
    topic: str | None = None,
    group: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> ProbeResult:
    """Connect, find the JetStream stream of the subject and, for a source, its consumer.

    Parameters
    ----------
    url
        ``nats://[user:password@]host:port``.
    role
        ``"source"`` (the stream and the durable consumer `group`) or ``"sink"``.
    topic
        The subject.
    group
        The source's durable consumer.
    options
        The endpoint's options, checked as the source or sink would check them; the
        probe's `timeout` replaces their connection timeouts and reconnection.
    timeout
        Seconds to connect, and for each JetStream request.
    """
    endpoint = describe_endpoint(url, topic)
    owner = "NatsSource" if role == "source" else "NatsSink"
    errors: list[Exception] = []

    async def remember(error: Exception) -> None:  # why connecting failed, to say so
        errors.append(error)

    bounded = {
        **(options or {}),
        "connect_timeout": timeout,
        "request_timeout": timeout,
        "max_reconnect_attempts": 0,
        "error_cb": remember,
    }
    try:
        _import_nats(owner)
        known = _SOURCE_OPTIONS if role == "source" else _SINK_OPTIONS
        settings = _Settings(url, topic or "", bounded, known=known, owner=owner)
    except (ConfigError, DependencyMissingError) as exc:
        return ProbeResult(endpoint=endpoint, ok=False, detail=str(exc))
    loop = _Loop("headrace-nats-probe")
    try:
        ok, detail = loop.run(
            _look(settings, role=role, group=group),
            timeout=3 * timeout + 5,
            what=f"NATS {settings.shown}: probing {endpoint}",
        )
    except StreamError as exc:
        cause = errors[-1] if errors else exc.__cause__ or exc
        reason = str(cause) or type(cause).__name__
        ok, detail = (
            False,
            f"NATS is unreachable within {timeout:g}s ({reason}): check nats-server is "
            "running with JetStream (-js) and the URL is right",
        )
    finally:
        loop.stop()
    return ProbeResult(endpoint=endpoint, ok=ok, detail=detail)


async def _look(settings: _Settings, *, role: Role, group: str | None) -> tuple[bool, str]:
    """(usable, what was found) for the subject's stream and the group's consumer."""
    import nats.errors
    from nats.js.errors import APIError, NotFoundError

    subject = settings.subject
    client = await settings.connect(where=f"probe of subject '{subject}'")
    try:
        js = client.jetstream(timeout=settings.request_timeout)
        name = settings.stream
        try:
            if name is None:
                name = await js.find_stream_name_by_subject(subject)
            info = await js.stream_info(name)
        except NotFoundError:
            missing = name or _stream_name(subject)
            if name is not None and (owner := await _owner_of(js, subject)) is not None:
                return False, (
                    f"stream '{name}' does not exist and subject '{subject}' belongs to "
                    f"stream '{owner}', so '{name}' cannot be created for it: set the "
                    f"'stream' option to '{owner}', or remove it"
                )
            if settings.create_stream:
                return True, (
                    f"connected; no stream captures subject '{subject}' yet: the {role} "
                    f"creates stream '{missing}' when it starts"
                )
            return False, (
                f"no JetStream stream captures subject '{subject}' and 'create_stream' is "
                "off: create one (nats stream add), or turn 'create_stream' on"
            )
        captured = info.config.subjects or []
        if not any(_subject_covers(pattern, subject) for pattern in captured):
            return False, (
                f"stream '{name}' captures {captured}, not subject '{subject}': name the "
                "right stream with the 'stream' option, or add the subject to the stream"
            )
        detail = f"stream '{name}' holds {info.state.messages} message(s)"
        if role != "source" or not group:
            return True, detail
        try:
            consumer = await js.consumer_info(name, group)
        except NotFoundError:
            return True, (
                f"{detail}; consumer '{group}' does not exist yet: created when the source starts"
            )
        return True, (
            f"{detail}; consumer '{group}' has {consumer.num_pending} undelivered and "
            f"{consumer.num_ack_pending} unacknowledged message(s)"
        )
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
        return False, (
            f"JetStream does not answer ({type(exc).__name__}): start nats-server with "
            "JetStream enabled (-js)"
        )
    except APIError as exc:
        if exc.code == 503:
            return False, f"JetStream is unavailable ({exc}): start nats-server with -js"
        return False, f"NATS refused the look-up ({exc}): check the account's permissions"
    finally:
        await _close_quietly(client)


async def _owner_of(js: Any, subject: str) -> str | None:
    """The stream that captures `subject`, if any."""
    from nats.js.errors import NotFoundError

    try:
        return str(await js.find_stream_name_by_subject(subject))
    except NotFoundError:
        return None
