"""Traces: one OpenTelemetry trace follows an event from its producer to its output.

A producer that traces puts a W3C ``traceparent`` header on the event (Kafka, NATS and
Redis carry headers; so does HTTP). The worker continues that trace: the event gets a
``process`` span, a child of the producer's span, with one child per stage it went through
(decode, validate, predict, postprocess, send, settle), and its output or dead
letter leaves with a ``traceparent`` naming the ``process`` span, so whoever consumes it
continues the same trace.

Sampling is decided per event, cheaply, before any span exists (a span costs tens of
microseconds; an event about five): parent-based, so an event whose producer sampled it
is traced and one whose producer did not is not, and a `sample_ratio` share of the events
that arrive without a trace. A dead letter is always traced, with its error, whatever
the parent said. Because the worker decides, its tracer provider must keep what it is
given: `tracer_provider` builds one that does (and exports over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set).

Stages run per batch, so a sampled event's stage spans carry the batch's stage times
(explicit start and end timestamps): what the event waited for is what its batch did.

The OpenTelemetry SDK is optional: ``pip install 'headrace[otel]'``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import compress
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from headrace.errors import ConfigError, DependencyMissingError

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "TRACEPARENT",
    "EventTracer",
    "HasHeaders",
    "http_server_span",
    "tracer_provider",
]

TRACEPARENT = "traceparent"
"""The W3C Trace Context header carried on events, outputs and dead letters."""

_TRACESTATE = "tracestate"
_TRACE_HEADERS = frozenset({TRACEPARENT, _TRACESTATE})
_SCOPE = "headrace"


def _otel(feature: str) -> Any:
    """The OpenTelemetry API module, or a clear error naming the extra."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401 - the SDK is what records spans
        from opentelemetry import trace
    except ImportError as exc:
        raise DependencyMissingError("opentelemetry-sdk", "otel", feature) from exc
    return trace


def tracer_provider(
    service_name: str,
    *,
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """An SDK tracer provider for a headrace process.

    Parameters
    ----------
    service_name
        The ``service.name`` resource attribute (the pipeline or server name).
    sample_ratio
        The provider's own sampler: parent-based, with this ratio for new traces. Keep
        1.0 for a stream worker (its `EventTracer` samples before spans exist); a server
        sets its ratio here.
    exporter
        Where spans go (batched). None: OTLP over HTTP when the standard
        ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` variable is set, else nowhere.
    """
    _otel("tracing")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    _check_ratio(sample_ratio, what="sample_ratio")
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if exporter is None and (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise DependencyMissingError(
                "opentelemetry-exporter-otlp-proto-http", "otel", "the OTLP span exporter"
            ) from exc
        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _check_ratio(ratio: float, *, what: str) -> None:
    if not isinstance(ratio, int | float) or math.isnan(ratio) or not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"{what} {ratio!r} is not within [0, 1]: give a share like 0.001")


class HasHeaders(Protocol):
    """Anything with message headers (a stream `Message`, an `OutRecord`)."""

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """``(name, value)`` pairs as the broker carries them."""
        ...


def _header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name or key.lower() == name:
            return value
    return None


def _sampled_flag(traceparent: bytes) -> bool | None:
    """The sampled bit of a ``traceparent`` (version 00 layout); None if malformed."""
    if len(traceparent) < 55 or traceparent[2:3] != b"-" or traceparent[52:53] != b"-":
        return None
    try:
        return bool(int(traceparent[53:55], 16) & 1)
    except ValueError:
        return None


class _ListGetter:
    """Reads W3C headers from ``(str, bytes)`` pairs (the propagator's getter protocol)."""

    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        value = _header(carrier, key)
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _AsgiGetter:
    """Reads W3C headers from ASGI ``(bytes, bytes)`` pairs (lower-case names)."""

    def get(self, carrier: Sequence[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.encode("latin-1")
        found = [v.decode("latin-1") for k, v in carrier if k == wanted]
        return found or None

    def keys(self, carrier: Sequence[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


class EventTracer:
    """Spans for the sampled events of a batch worker.

    The worker asks `select` which events of a batch to trace, then for each one calls
    `begin` (the event's ``process`` span), `stage` (a finished child per stage, with the
    batch's times), `inject` (the span's ``traceparent`` onto its output or dead letter)
    and `end`.

    Parameters
    ----------
    pipeline
        The pipeline name, on every span.
    sample_ratio
        The share of events without a trace that are traced, in [0, 1].
    provider
        The tracer provider; its sampler must keep what it is given (`tracer_provider`
        with the default ratio). None: the global provider.
    seed
        For the random choice (tests).
    """

    def __init__(
        self,
        *,
        pipeline: str,
        sample_ratio: float,
        provider: Any = None,
        seed: int | None = None,
    ) -> None:
        trace = _otel("tracing")
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _check_ratio(sample_ratio, what="tracing.sample_ratio")
        self.pipeline = pipeline
        self.sample_ratio = float(sample_ratio)
        self._trace = trace
        self._tracer: Tracer = (provider or trace.get_tracer_provider()).get_tracer(_SCOPE)
        self._propagator = TraceContextTextMapPropagator()
        # duck-typed: subclassing `Getter` would import OpenTelemetry with this module
        self._getter = cast("Getter[Sequence[tuple[str, bytes]]]", _ListGetter())
        self._rng = np.random.default_rng(seed)
        # Events without a trace are drawn one by one with probability `sample_ratio`,
        # as gaps between draws (geometric): no random number per batch or per event
        # until the next chosen one comes, so a low ratio costs next to nothing.
        self._next = self._gap() - 1

    def _gap(self) -> int:
        ratio = self.sample_ratio
        return int(self._rng.geometric(ratio)) if 0.0 < ratio < 1.0 else 1

    def select(self, carriers: Sequence[HasHeaders], *, always: Iterable[int] = ()) -> list[int]:
        """Indices of the events to trace, sorted.

        An event with a valid ``traceparent`` follows its sampled flag; one without is
        drawn with probability `sample_ratio`; indices in `always` (the errored events)
        are traced regardless.
        """
        n = len(carriers)
        chosen: set[int] = set()
        ratio = self.sample_ratio
        if ratio >= 1.0:
            chosen.update(range(n))
        elif ratio > 0.0:
            at = self._next
            while at < n:
                chosen.add(at)
                at += self._gap()
            self._next = at - n
        # Most events carry no headers at all: find those that do (one attribute read
        # each, the truth test at C speed), then look only at them.
        everyone = [carrier.headers for carrier in carriers]
        for i in compress(range(n), everyone):
            headers = everyone[i]
            if headers:
                value = _header(headers, TRACEPARENT)
                if value is not None:
                    sampled = _sampled_flag(value)
                    if sampled is True:
                        chosen.add(i)
                    elif sampled is False:
                        chosen.discard(i)
        chosen.update(always)
        return sorted(chosen)

    def begin(
        self,
        headers: Sequence[tuple[str, bytes]],
        *,
        start_ns: int,
        attributes: Mapping[str, str | int],
        force: bool = False,
    ) -> Span:
        """Start an event's ``process`` span, a child of the trace in its headers.

        `force` traces it even when its producer did not sample it (a dead letter): the
        span joins the producer's trace, marked sampled from here on.
        """
        trace = self._trace
        context = self._propagator.extract(headers, getter=self._getter)
        if force:
            parent = trace.get_current_span(context).get_span_context()
            if parent.is_valid and not parent.trace_flags.sampled:
                sampled = trace.SpanContext(
                    trace_id=parent.trace_id,
                    span_id=parent.span_id,
                    is_remote=True,
                    trace_flags=trace.TraceFlags(parent.trace_flags | trace.TraceFlags.SAMPLED),
                    trace_state=parent.trace_state,
                )
                context = trace.set_span_in_context(trace.NonRecordingSpan(sampled))
        return self._tracer.start_span(
            f"{self.pipeline} process",
            context=context,
            kind=trace.SpanKind.CONSUMER,
            attributes={"headrace.pipeline": self.pipeline, **attributes},
            start_time=start_ns,
        )

    def stage(
        self,
        event: Span,
        name: str,
        *,
        start_ns: int,
        end_ns: int,
        error: str | None = None,
    ) -> None:
        """A finished child span of `event` for one stage (failed when `error` is given)."""
        self.stages(event, [(name, start_ns, end_ns, error)])

    def stages(self, event: Span, stages: Iterable[tuple[str, int, int, str | None]]) -> None:
        """Finished child spans of `event`: ``(name, start_ns, end_ns, error or None)``."""
        trace = self._trace
        start_span = self._tracer.start_span
        context = trace.set_span_in_context(event)
        for name, start_ns, end_ns, error in stages:
            span = start_span(name, context=context, start_time=start_ns)
            if error is not None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, error))
            span.end(end_time=max(end_ns, start_ns))

    def fail(self, event: Span, *, stage: str, error: str, field: str | None) -> None:
        """Mark an event span as a dead letter: error status, stage and field."""
        trace = self._trace
        event.set_attribute("headrace.error.stage", stage)
        if field is not None:
            event.set_attribute("headrace.error.field", field)
        event.set_status(trace.Status(trace.StatusCode.ERROR, error))

    def inject(self, event: Span, headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """`headers` with ``traceparent`` (and ``tracestate``) naming `event` instead."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(event))
        kept = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS]
        kept.extend((k, v.encode("latin-1")) for k, v in carrier.items())
        return kept

    def end(self, event: Span, *, end_ns: int) -> None:
        """End an event span."""
        event.end(end_time=end_ns)


@contextmanager
def http_server_span(
    tracer: Tracer, headers: Sequence[tuple[bytes, bytes]], *, method: str, route: str
) -> Iterator[Span]:
    """A ``SERVER`` span for one HTTP request, continuing the caller's ``traceparent``.

    For the inference server, around a request's handling::

        with http_server_span(tracer, scope["headers"], method="POST",
                              route="/v2/models/{name}/infer") as span:
            ...
            span.set_attribute("http.response.status_code", status)

    The span is current inside the block (spans started there are its children), ends
    when it exits, and records an exception that escapes it. Sampling is the tracer
    provider's (`tracer_provider` with the server's ratio). `headers` are ASGI's raw
    ``(name, value)`` pairs.
    """
    trace = _otel("HTTP tracing")
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    getter = cast("Getter[Sequence[tuple[bytes, bytes]]]", _AsgiGetter())
    context = TraceContextTextMapPropagator().extract(headers, getter=getter)
    span = tracer.start_span(
        f"{method} {route}",
        context=context,
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    )
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        yield span
