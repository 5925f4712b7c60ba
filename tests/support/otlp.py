"""A tiny OTLP/HTTP trace receiver for tests: keeps what exporters POST to /v1/traces."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class OtlpReceiver:
    """The requests received, decoded; `url` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[tuple[str, ExportTraceServiceRequest]] = []
        self.lock = threading.Lock()

    def spans(self) -> list[tuple[dict[str, str], Any]]:
        """Every span received, with its resource's string attributes."""
        found = []
        with self.lock:
            for _, request in self.requests:
                for resource_spans in request.resource_spans:
                    resource = {
                        a.key: a.value.string_value for a in resource_spans.resource.attributes
                    }
                    for scope in resource_spans.scope_spans:
                        found.extend((resource, span) for span in scope.spans)
        return found


@contextmanager
def otlp_receiver(port: int) -> Iterator[OtlpReceiver]:
    """Serve on 127.0.0.1:`port` until the block exits."""
    receiver = OtlpReceiver(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.requests.append((self.path, ExportTraceServiceRequest.FromString(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
