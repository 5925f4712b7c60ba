"""HTTP tracing on a live server: one SERVER span per request, continuing the caller's
W3C traceparent, with the error of a failed request; off by default."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from headrace.errors import ConfigError
from headrace.registry import Registry
from headrace.serving import build_app, serve_spec_from_dict
from headrace.serving.server import uvicorn_server
from support.models import local_registry
from support.serving import free_port, register_models

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from headrace.monitoring.tracing import tracer_provider

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("tracing")
    with local_registry(root) as opened:
        register_models(opened, root / "models")
        yield opened


class Live:
    def __init__(self, url: str, provider: Any, exporter: InMemorySpanExporter) -> None:
        self.url, self.provider, self.exporter = url, provider, exporter

    def spans(self) -> list[Any]:
        self.provider.force_flush()
        finished = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return finished


def _serve(registry: Registry, settings: dict[str, Any], provider: Any) -> Iterator[str]:
    port = free_port()
    config = serve_spec_from_dict({"port": port, **settings}, where="test")
    app = build_app(registry, config, tracer_provider=provider)
    server = uvicorn_server(app, config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and app.is_ready()):
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def live(registry: Registry) -> Iterator[Live]:
    exporter = InMemorySpanExporter()
    # ratio 0: only requests whose caller sampled them are traced
    provider = tracer_provider("test-serve", sample_ratio=0.0, exporter=exporter)
    for url in _serve(registry, {"tracing": {"sample_ratio": 0.0}}, provider):
        yield Live(url, provider, exporter)
    provider.shutdown()


def _body(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [len(rows), 5], "datatype": "FP64", "data": rows}]}


def _traceparent(sampled: bool) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-{'01' if sampled else '00'}"}


def test_a_request_continues_the_callers_trace(live: Live) -> None:
    live.spans()
    answer = requests.post(
        f"{live.url}/v2/models/fraud/infer",
        json=_body([[0.1, 0.2, 0.3, 0.4, 0.5]]),
        headers=_traceparent(True),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    (span,) = live.spans()
    assert span.name == "POST /v2/models/{name}/infer"
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.route"] == "/v2/models/{name}/infer"
    assert attributes["headrace.model"] == "fraud"
    assert span.status.status_code != StatusCode.ERROR


def test_unsampled_and_untraced_requests_make_no_span(live: Live) -> None:
    live.spans()
    for headers in (_traceparent(False), {}, {"traceparent": "garbage"}):
        answer = requests.get(f"{live.url}/v2/models/fraud", headers=headers, timeout=30)
        assert answer.status_code == 200
    assert live.spans() == []  # ratio 0 and a caller that did not sample


def test_a_server_error_is_on_the_span(live: Live) -> None:
    live.spans()
    # the lab model raises on f0 > 50: a model error, answered 500
    answer = requests.post(
        f"{live.url}/v2/models/lab/infer",
        json=_body([[99.0, 0.0, 0.0, 0.0, 0.0]]),
        headers=_traceparent(True),
        timeout=30,
    )
    assert answer.status_code == 500, answer.text
    (span,) = live.spans()
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == answer.status_code
    assert attributes["error.type"]
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None and event.attributes["exception.message"]
    assert span.status.status_code == StatusCode.ERROR
    assert "poison amount" in (span.status.description or "")


def test_a_client_error_is_recorded_without_failing_the_span(live: Live) -> None:
    live.spans()
    answer = requests.post(
        f"{live.url}/v2/models/nope-{TRACE_ID}/infer",
        json=_body([[0.0] * 5]),
        headers=_traceparent(True),
        timeout=30,
    )
    assert answer.status_code == 404
    (span,) = live.spans()
    # the client's name never reaches the span name (one name per route)
    assert span.name == "POST /v2/models/{name}/infer"
    assert dict(span.attributes or {})["error.type"] == "UnknownModelError"
    assert "headrace.model" not in dict(span.attributes or {})
    assert span.status.status_code != StatusCode.ERROR  # a 4xx is not a server error
    garbage = requests.get(f"{live.url}/no/such/{TRACE_ID}", headers=_traceparent(True), timeout=30)
    assert garbage.status_code == 404
    (span,) = live.spans()
    assert span.name == "GET unmatched route"


def test_tracing_is_off_without_the_config_section(registry: Registry) -> None:
    exporter = InMemorySpanExporter()
    provider = tracer_provider("test-off", exporter=exporter)
    for url in _serve(registry, {}, provider):
        answer = requests.get(f"{url}/v2/models/fraud", headers=_traceparent(True), timeout=30)
        assert answer.status_code == 200
    provider.force_flush()
    assert list(exporter.get_finished_spans()) == []


@pytest.mark.parametrize(
    ("tracing", "match"),
    [
        ({"sample_ratio": 1.5}, r"1.5 is not within \[0, 1\].*\$\.tracing\.sample_ratio"),
        ({"sample_ratio": -0.1}, r"\$\.tracing\.sample_ratio"),
        ({"sample_ratio": "often"}, r"\$\.tracing\.sample_ratio"),
        ({"ratio": 0.1}, r"unknown field `ratio`.*\$\.tracing"),
        ("yes", r"\$\.tracing"),
    ],
)
def test_bad_tracing_config_names_the_key(tracing: Any, match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        serve_spec_from_dict({"tracing": tracing}, where=str(tmp_path / "serve.yaml"))
