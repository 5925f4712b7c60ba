"""The Open Inference Protocol v2 over HTTP: a plain ASGI application.

No web framework: the routes are few and fixed, so a request is routed by splitting its
path once, and the inference route does exactly body -> tensors -> columns -> batcher ->
outputs -> body with nothing in between (a framework's per-request machinery costs more
than the model call for small batches). Routes:

==========================================================  =========================
``GET  /v2/health/live``, ``/v2/health/ready``, ``/v2``      open
``GET  /v2/models/{name}[/versions/{v}][/ready]``            inference token
``POST /v2/models/{name}[/versions/{v}]/infer``              inference token
``POST /v2/repository/index``, ``.../models/{name}/load``,   management token
``.../models/{name}/unload``
``GET  /metrics``, ``/v2/docs/openapi.json``                 open
==========================================================  =========================

With ``tracing`` in the config, each request gets an OpenTelemetry ``SERVER`` span that
continues the caller's W3C ``traceparent`` (route template as its name, the status code,
and the error of a failed request); without it no span code runs at all.

What a request means (inference, metadata, readiness, the repository extension, the
lifecycle) is the `DataPlane`'s, shared with the gRPC server; this module only routes,
reads bodies, and renders answers and errors.

Every error is ``{"error": "..."}`` with the status `status_of` gives (503 carries
``Retry-After``); a request that fails never stops the server. Secrets never reach a log
line: headers are not logged, and a token is only ever compared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from headrace import __version__
from headrace.errors import HeadraceError
from headrace.serving.auth import token_matches
from headrace.serving.dataplane import DataPlane
from headrace.serving.errors import (
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnauthorizedError,
    status_of,
)
from headrace.serving.logfilter import rate_limit
from headrace.serving.openapi import openapi_document
from headrace.serving.rest import encode_infer_response, parse_infer_request

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["InferenceApp"]

_log = logging.getLogger(__name__)
_access_log = logging.getLogger("headrace.serving.access")
rate_limit(_log)  # a client can make every request fail the same way: log a few of each

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON: Final = (b"content-type", b"application/json")
_OCTETS: Final = (b"content-type", b"application/octet-stream")
_EXTENSIONS: Final = ["model_repository", "binary_tensor_data"]
# The protocol: "A 200 status code indicates true and a 4xx status code indicates false"
# for health and model readiness (Triton answers 400; Kubernetes probes read >= 400 as
# not ready).
_NOT_READY: Final = 400
_FIXED_ROUTES: Final = frozenset(
    {
        "v2",
        "v2/health/live",
        "v2/health/ready",
        "v2/docs/openapi.json",
        "v2/repository/index",
        "metrics",
    }
)
_UNMATCHED: Final = "unmatched route"


class _ClientGoneError(Exception):
    """The client disconnected before sending its whole body."""


class _Request:
    """What the handlers need from one HTTP request, read from its headers once."""

    __slots__ = ("authorization", "content_length", "header_length", "key", "method", "parts")

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.parts: list[str] = scope["path"].strip("/").split("/")
        self.authorization: bytes | None = None
        self.content_length: int | None = None
        self.header_length: int | None = None
        self.key: str | None = None  # x-headrace-key: a rollout's sticky routing key
        for key, value in scope["headers"]:
            if key == b"authorization":
                self.authorization = value
            elif key == b"content-length":
                self.content_length = _int_header(value, "Content-Length")
            elif key == b"inference-header-content-length":
                self.header_length = _int_header(value, "Inference-Header-Content-Length")
            elif key == b"x-headrace-key":
                self.key = value.decode("latin-1")


def _int_header(value: bytes, name: str) -> int:
    if not value.isdigit():
        raise InvalidInputError(f"Header {name} is {value[:20]!r}: give a byte count")
    return int(value)


class InferenceApp:
    """The ASGI application (see the module docstring for its routes).

    Parameters
    ----------
    dataplane
        What every request means (inference, metadata, readiness, the repository
        extension) and the server's lifecycle; this class only routes, reads bodies and
        renders answers and errors.
    tracer
        Traces each HTTP request when given (`build_app` makes one from the config's
        ``tracing`` section); None traces nothing.

    The ASGI lifespan runs the data plane's `DataPlane.startup` and `DataPlane.shutdown`.
    """

    def __init__(self, dataplane: DataPlane, *, tracer: Tracer | None = None) -> None:
        self.dataplane = dataplane
        self.tracer = tracer
        auth = dataplane.config.auth
        self._inference_token = _token(auth.inference_token)
        self._management_token = _token(auth.management_token)
        self._openapi: bytes | None = None

    # The lifecycle, as the ASGI lifespan, uvicorn's stop and tests see it.

    @property
    def stopping(self) -> bool:
        """Whether shutdown began."""
        return self.dataplane.stopping

    async def startup(self) -> None:
        """Start the data plane; called by the ASGI lifespan."""
        await self.dataplane.startup()

    async def shutdown(self) -> None:
        """Stop the data plane; called by the ASGI lifespan."""
        await self.dataplane.shutdown()

    def drain(self, *, within_s: float) -> None:
        """See `DataPlane.drain`."""
        self.dataplane.drain(within_s=within_s)

    def is_ready(self) -> bool:
        """See `DataPlane.is_ready`."""
        return self.dataplane.is_ready()

    # -- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope (``http`` or ``lifespan``)."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    _log.exception("server start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tracer is None:
            await self._respond(scope, receive, send, None)
            return
        from headrace.monitoring.tracing import http_server_span

        method = scope["method"]
        route = _route_template(scope["path"].strip("/").split("/"))
        with http_server_span(self.tracer, scope["headers"], method=method, route=route) as span:
            await self._respond(scope, receive, send, span)

    async def _respond(self, scope: Scope, receive: Receive, send: Send, span: Span | None) -> None:
        started = time.perf_counter()
        model, endpoint = "", "other"
        try:
            request = _Request(scope)
            parts = request.parts
            if parts[0] == "v2":
                model, endpoint = _route_labels(parts)
            status, body, headers = await self._dispatch(request, receive)
        except _ClientGoneError:
            if span is not None:
                span.set_attribute("error.type", "client_disconnected")
            return
        except Exception as exc:
            status, body, headers = self._error(exc)
            if span is not None:
                _span_error(span, exc, status)
        if model not in self.dataplane.served:
            model = ""  # a name no model answered to is the client's: keep it out of labels
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if model:
                span.set_attribute("headrace.model", model)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - started
        self.dataplane.metrics.observe(model, endpoint, status, elapsed)
        if self.dataplane.config.access_log:
            _log_access(scope, model=model, status=status, elapsed=elapsed, sent=len(body))

    def _error(self, exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        status = status_of(exc)
        headers = [_JSON]
        if status >= 500 and not isinstance(exc, HeadraceError):
            _log.error("request failed", exc_info=exc)
            message = f"Internal server error ({type(exc).__name__}); see the server log"
        else:
            if status == 500:
                _log.warning("request failed: %s", exc)
            message = str(exc)
        if isinstance(exc, OverloadedError):
            headers.append((b"retry-after", str(exc.retry_after).encode()))
        elif status == 503:
            headers.append((b"retry-after", b"1"))
        elif status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="headrace"'))
        elif isinstance(exc, _MethodNotAllowedError):
            headers.append((b"allow", exc.allowed.encode()))
        if status in (408, 413):  # the body was not read to its end: end the connection
            headers.append((b"connection", b"close"))
        return status, orjson.dumps({"error": message}), headers

    # -- routing ----------------------------------------------------------------------

    async def _dispatch(
        self, request: _Request, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        parts, method = request.parts, request.method
        n = len(parts)
        if parts[0] == "v2":
            if n >= 3 and parts[1] == "models":
                return await self._model_route(request, receive, parts[2], parts[3:])
            if n >= 2 and parts[1] == "repository":
                return await self._repository_route(request, receive, parts[2:])
            if n == 3 and parts[1] == "health" and parts[2] in ("live", "ready"):
                self._method(request, "GET")
                return self._health(parts[2])
            if n == 1:
                self._method(request, "GET")
                return _json(
                    200, {"name": "headrace", "version": __version__, "extensions": _EXTENSIONS}
                )
            if parts[1:] == ["docs", "openapi.json"]:
                self._method(request, "GET")
                if self._openapi is None:
                    self._openapi = orjson.dumps(openapi_document())
                return 200, self._openapi, [_JSON]
        elif parts == ["metrics"]:
            self._method(request, "GET")
            body, content_type = await asyncio.to_thread(self.dataplane.metrics.exposition)
            return 200, body, [(b"content-type", content_type.encode())]
        raise NotFoundError(
            f"No route for {method} /{'/'.join(parts)}: the Open Inference Protocol routes "
            "are under /v2 (see /v2/docs/openapi.json)"
        )

    @staticmethod
    def _method(request: _Request, allowed: str) -> None:
        if request.method != allowed:
            raise _MethodNotAllowedError(request, allowed)

    async def _model_route(
        self, request: _Request, receive: Receive, name: str, rest: list[str]
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        version: str | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else "" if not rest else None
        if action not in ("", "ready", "infer") or not name:
            raise NotFoundError(
                f"No route for {request.method} /{'/'.join(request.parts)}: model routes "
                "are /v2/models/NAME[/versions/V][/ready|/infer]"
            )
        if action == "infer":
            self._method(request, "POST")
            self._authorize(request, self._inference_token, "inference")
            return await self._infer(request, receive, name, version)
        self._method(request, "GET")
        self._authorize(request, self._inference_token, "inference")
        if action == "ready":
            ready = await self.dataplane.model_ready(name, version)  # 404 if unknown
            return _json(200 if ready else _NOT_READY, {"name": name, "ready": ready})
        meta = await self.dataplane.metadata(name, version)
        self.dataplane.served.add(name)
        return _json(
            200,
            {
                "name": meta.name,
                "versions": meta.versions,
                "platform": meta.platform,
                "inputs": [_tensor(t) for t in meta.inputs],
                "outputs": [_tensor(t) for t in meta.outputs],
            },
        )

    async def _repository_route(
        self, request: _Request, receive: Receive, rest: list[str]
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if rest == ["index"]:
            self._method(request, "POST")
            self._authorize(request, self._management_token, "management")
            body = await self._body(request, receive)
            only_ready = _index_filter(body)
            entries = [
                {"name": s.name, "version": s.version, "state": s.state, "reason": s.reason}
                for s in self.dataplane.index(only_ready=only_ready)
            ]
            return _json(200, entries)
        if len(rest) == 3 and rest[0] == "models" and rest[1] and rest[2] in ("load", "unload"):
            self._method(request, "POST")
            self._authorize(request, self._management_token, "management")
            await self._body(request, receive)  # parameters are accepted and unused
            name = rest[1]
            if rest[2] == "load":
                await self.dataplane.load(name)
            else:
                await self.dataplane.unload(name)
            return 200, b"{}", [_JSON]
        raise NotFoundError(
            f"No route for {request.method} /{'/'.join(request.parts)}: repository routes "
            "are /v2/repository/index and /v2/repository/models/NAME/load|unload"
        )

    def _health(self, which: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if which == "live":
            return _json(200, {"live": True})
        ready = self.is_ready()
        return _json(200 if ready else _NOT_READY, {"ready": ready})

    def _authorize(self, request: _Request, expected: bytes | None, which: str) -> None:
        if expected is None:
            return
        given = request.authorization
        if not token_matches(given, expected):
            raise UnauthorizedError(
                f"This route needs the {which} bearer token: send `Authorization: Bearer "
                f"<token>` (the server's auth.{which}_token)"
                + ("" if given is None else "; the token sent is not it")
            )

    # -- inference --------------------------------------------------------------------

    async def _body(self, request: _Request, receive: Receive) -> bytes:
        limit = self.dataplane.config.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(
                f"Request body of {request.content_length} bytes is larger than the "
                f"server's limit of {limit} bytes (limits.max_body_bytes): send fewer rows "
                "per request"
            )
        chunks: list[bytes] = []
        size = 0
        deadline = self.dataplane.config.connections.body_timeout_s
        try:
            # One deadline for the whole body: a client trickling bytes (or an endless
            # chunked upload) holds a connection and a task no longer than this.
            async with self.dataplane.deadline(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _ClientGoneError
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLargeError(
                            f"Request body is larger than the server's limit of {limit} "
                            "bytes (limits.max_body_bytes): send fewer rows per request"
                        )
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            self.dataplane.raise_if_draining()
            raise RequestTimeoutError(
                f"Request body did not arrive within {deadline:g} s "
                f"(connections.body_timeout_s; {size} bytes came): send it faster, or "
                "send fewer rows per request"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _infer(
        self, request: _Request, receive: Receive, name: str, version: str | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        body = await self._body(request, receive)
        parsed = parse_infer_request(
            body,
            header_length=request.header_length,
            max_elements=self.dataplane.config.limits.max_elements,
        )
        part, outputs = await self.dataplane.infer(
            name,
            version,
            parsed.inputs,
            requested=parsed.outputs,
            key=request.key if request.key is not None else parsed.id,
        )
        payload, header_length = encode_infer_response(
            model=name,
            version=part.release.rpartition(":")[2],
            request_id=parsed.id,
            outputs=outputs,
            binary_outputs=parsed.binary_outputs,
            parameters={"release": part.release, "release_digest": part.release_digest},
        )
        if header_length is None:
            return 200, payload, [_JSON]
        return 200, payload, [_OCTETS, (b"inference-header-content-length", b"%d" % header_length)]


class _MethodNotAllowedError(NotFoundError):
    """A known route asked with the wrong method (405)."""

    status = 405

    def __init__(self, request: _Request, allowed: str) -> None:
        self.allowed = allowed
        super().__init__(
            f"{request.method} is not allowed on /{'/'.join(request.parts)}: use {allowed}"
        )


def _token(token: str | None) -> bytes | None:
    return None if token is None else token.encode()


def _json(status: int, document: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, orjson.dumps(document), [_JSON]


def _tensor(meta: Any) -> dict[str, Any]:
    return {"name": meta.name, "datatype": meta.datatype, "shape": list(meta.shape)}


def _route_template(parts: list[str]) -> str:
    """A span name's route: model names and versions as placeholders, and one name for
    every path that is no route (span names must not carry what a client chose)."""
    if len(parts) >= 3 and parts[0] == "v2" and parts[1] == "models":
        template, rest = "/v2/models/{name}", parts[3:]
        if len(rest) >= 2 and rest[0] == "versions":
            template, rest = template + "/versions/{version}", rest[2:]
        if not rest:
            return template
        return f"{template}/{rest[0]}" if rest in (["ready"], ["infer"]) else _UNMATCHED
    if len(parts) == 5 and parts[:3] == ["v2", "repository", "models"]:
        return (
            f"/v2/repository/models/{{name}}/{parts[4]}"
            if parts[4]
            in (
                "load",
                "unload",
            )
            else _UNMATCHED
        )
    joined = "/".join(parts)
    return f"/{joined}" if joined in _FIXED_ROUTES else _UNMATCHED


def _log_access(scope: Scope, *, model: str, status: int, elapsed: float, sent: int) -> None:
    """One JSON line per request: the route's template, never the raw path, headers or
    body (a client chose those; tokens travel in them)."""
    client = scope.get("client")
    line = {
        "ts": round(time.time(), 3),
        "method": scope["method"],
        "route": _route_template(scope["path"].strip("/").split("/")),
        "model": model or None,
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
        "bytes_sent": sent,
        "client": client[0] if client else None,
    }
    _access_log.info(orjson.dumps(line).decode())


def _span_error(span: Span, exc: Exception, status: int) -> None:
    """Put a failed request's error on its span: an exception event and its type; the
    span's status is ERROR for a server error (5xx) only, as OpenTelemetry's HTTP
    conventions say (a 4xx is the client's error, not the server's)."""
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_attribute("error.type", type(exc).__name__)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, str(exc)))


def _route_labels(parts: list[str]) -> tuple[str, str]:
    """The metric labels of a /v2 route: (model, endpoint)."""
    if len(parts) >= 3 and parts[1] == "models":
        last = parts[-1]
        endpoint = last if last in ("infer", "ready") and len(parts) in (4, 6) else "model"
        return parts[2], endpoint
    if len(parts) >= 2 and parts[1] in ("repository", "health"):
        return "", parts[1]
    return "", "server"


def _index_filter(body: bytes) -> bool:
    """The index request's ``{"ready": true}``: list only ready models."""
    if not body.strip():
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"Repository index body is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidInputError('Repository index body must be a JSON object like {"ready": true}')
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInputError(f'Repository index "ready" must be true or false, got {ready!r}')
    return ready
