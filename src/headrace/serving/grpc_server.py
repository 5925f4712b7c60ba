"""The Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService``.

It runs on the HTTP server's event loop (``grpc.aio``) and calls the same `DataPlane` as
the HTTP application: model names resolve through the same `ModelRepository`, requests
join the same adaptive batchers as HTTP requests for the model, and the same limits,
tokens and metrics apply.
Only the wire differs: protobuf messages in, protobuf messages out (`grpc_codec`).

RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer and
the repository extension (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload).
Any other RPC of Triton's service answers UNIMPLEMENTED.

Errors are the HTTP transport's, translated by one table from the protocol status
(`status_of`) to a gRPC code: 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404 NOT_FOUND,
413 RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE (with a ``retry-after`` trailer),
504 DEADLINE_EXCEEDED. A failed request never stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from headrace import __version__
from headrace.errors import ConfigError, DependencyMissingError, HeadraceError
from headrace.serving.auth import token_matches
from headrace.serving.config import TLSSpec
from headrace.serving.errors import (
    InvalidInputError,
    OverloadedError,
    UnauthorizedError,
    status_of,
)
from headrace.serving.grpc_codec import inputs_from_request, requested_outputs, response_for
from headrace.serving.logfilter import rate_limit

if TYPE_CHECKING:
    import grpc
    import grpc.aio

    from headrace.serving._proto import oip_v2_pb2 as pb
    from headrace.serving.dataplane import DataPlane

    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = Callable[[Any, Context], Awaitable[Any]]

__all__ = ["SERVICE", "GrpcServer", "grpc_code"]

_log = logging.getLogger(__name__)
rate_limit(_log)  # a client can make every RPC fail the same way: log a few of each

SERVICE: Final = "inference.GRPCInferenceService"
"""The service's full name: every RPC's path is ``/inference.GRPCInferenceService/<Rpc>``."""

_EXTENSIONS: Final = ["model_repository"]

# The protocol status (HTTP's) -> the gRPC code's name; anything else 4xx is the client's
# (FAILED_PRECONDITION), anything else 5xx the server's (INTERNAL).
_CODES: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _grpc() -> Any:
    try:
        import grpc
        import grpc.aio
    except ImportError as exc:
        raise DependencyMissingError("grpcio", "server", "the gRPC server") from exc
    return grpc


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code for a protocol (HTTP) status, as the table above has it."""
    name = _CODES.get(status)
    if name is None:
        name = "FAILED_PRECONDITION" if 400 <= status < 500 else "INTERNAL"
    code: grpc.StatusCode = getattr(_grpc().StatusCode, name)
    return code


class GrpcServer:
    """``inference.GRPCInferenceService`` over a `DataPlane`, on the running loop.

    Parameters
    ----------
    dataplane
        What every RPC means (inference, metadata, readiness, the repository extension),
        and the repository, batchers, limits, tokens and metrics the HTTP server shares.
    host, port
        Where to listen; port 0 picks a free port (`port` tells which after `start`).
    tls
        Serve over TLS with this certificate and key (the HTTP server's), else plaintext.
    grace_s
        On stop, RPCs in flight get this long to finish (see `grpc_grace_s`).

    Call `attach` to start and stop it with the data plane, or `start` and `stop` from
    inside the event loop.
    """

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        host: str,
        port: int,
        tls: TLSSpec | None = None,
        grace_s: float = 5.0,
    ) -> None:
        self.dataplane = dataplane
        self.grace_s = grace_s
        self.host = host
        self.port = port
        self.tls = tls
        self._server: grpc.aio.Server | None = None
        inference = dataplane.config.auth.inference_token
        management = dataplane.config.auth.management_token
        self._inference_token = None if inference is None else inference.encode()
        self._management_token = None if management is None else management.encode()

    def attach(self) -> None:
        """Start with the data plane's start-up, stop with its shutdown."""
        self.dataplane.on_startup.append(self.start)
        self.dataplane.on_shutdown.append(self.stop)

    async def start(self) -> None:
        """Bind and start serving; `port` is then the bound port.

        Raises
        ------
        DependencyMissingError
            When grpcio is not installed.
        ConfigError
            When the address cannot be bound, or the TLS key is encrypted.
        """
        grpc = _grpc()
        from headrace.serving._proto import oip_v2_pb2 as pb

        limit = self.dataplane.config.limits.max_body_bytes
        connections = self.dataplane.config.connections
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
                # The HTTP server's connection limits, in gRPC's words: metadata is
                # gRPC's headers; an idle connection is closed after the keep-alive time.
                ("grpc.max_metadata_size", connections.max_header_bytes),
                ("grpc.max_connection_idle_ms", int(connections.keepalive_timeout_s * 1000)),
                ("grpc.max_concurrent_streams", connections.max_connections),
            ]
        )
        server.add_generic_rpc_handlers((self._handlers(grpc, pb),))
        address = f"{self.host}:{self.port}"
        try:
            if self.tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, _credentials(grpc, self.tls))
        except RuntimeError:  # grpcio's word for any failed bind
            bound = 0
        if bound == 0:
            raise ConfigError(
                f"The gRPC server cannot listen on {address} (grpc_port): the port is taken "
                "or the host is not an address of this machine. Pick another --grpc-port, or "
                "0 for a free one"
            )
        self.port = self.dataplane.grpc_port = bound
        await server.start()
        self._server = server
        _log.info("gRPC server listening on %s:%d", self.host, bound)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting RPCs; RPCs in flight get `grace` seconds (default `grace_s`)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(self.grace_s if grace is None else grace)

    # -- the service --------------------------------------------------------------------

    def _handlers(self, grpc: Any, pb: Any) -> Any:
        def unary(handler: Handler, request: Any, response: Any, endpoint: str) -> Any:
            # The request is parsed in the RPC, not by grpcio: grpcio answers a message it
            # cannot parse with INTERNAL, and a malformed message is the client's error.
            return grpc.unary_unary_rpc_method_handler(
                self._guarded(handler, endpoint, request),
                response_serializer=response.SerializeToString,
            )

        methods: Mapping[str, Any] = {
            "ServerLive": unary(
                self._server_live, pb.ServerLiveRequest, pb.ServerLiveResponse, "health"
            ),
            "ServerReady": unary(
                self._server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse, "health"
            ),
            "ModelReady": unary(
                self._model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse, "ready"
            ),
            "ServerMetadata": unary(
                self._server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
                "server",
            ),
            "ModelMetadata": unary(
                self._model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse, "model"
            ),
            "ModelInfer": unary(
                self._model_infer, pb.ModelInferRequest, pb.ModelInferResponse, "infer"
            ),
            "RepositoryIndex": unary(
                self._repository_index,
                pb.RepositoryIndexRequest,
                pb.RepositoryIndexResponse,
                "repository",
            ),
            "RepositoryModelLoad": unary(
                self._repository_load,
                pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse,
                "repository",
            ),
            "RepositoryModelUnload": unary(
                self._repository_unload,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
                "repository",
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _guarded(self, handler: Handler, endpoint: str, message: Any) -> Handler:
        """Run one RPC: parse its `message` type, errors become a status code, every
        answer is counted."""
        metrics = self.dataplane.metrics
        label = f"grpc_{endpoint}"

        async def rpc(raw: bytes, context: Context) -> Any:
            started = time.perf_counter()
            request: Any = None
            try:
                request = _parse(message, raw)
                response = await handler(request, context)
            except asyncio.CancelledError:
                raise  # the client went away, or the server is stopping
            except Exception as exc:
                status = status_of(exc)
                # a failed request's model name is the client's text: keep it out of labels
                metrics.observe("", label, status, time.perf_counter() - started)
                await _abort(context, exc, status)
                raise  # unreachable: abort raises
            model = getattr(request, "model_name", "") or getattr(request, "name", "")
            metrics.observe(model, label, 200, time.perf_counter() - started)
            return response

        return rpc

    def _authorize(self, context: Context, expected: bytes | None, which: str) -> None:
        if expected is None:
            return
        given: str | bytes | None = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = value
                break
        if not token_matches(given, expected):
            raise UnauthorizedError(
                f"This RPC needs the {which} bearer token: send metadata `authorization: "
                f"Bearer <token>` (the server's auth.{which}_token)"
                + ("" if given is None else "; the token sent is not it")
            )

    async def _server_live(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        return pb.ServerReadyResponse(ready=self.dataplane.is_ready())

    async def _model_ready(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        self._authorize(context, self._inference_token, "inference")
        ready = await self.dataplane.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def _server_metadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        return pb.ServerMetadataResponse(
            name="headrace", version=__version__, extensions=_EXTENSIONS
        )

    async def _model_metadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        self._authorize(context, self._inference_token, "inference")
        meta = await self.dataplane.metadata(request.name, request.version or None)
        response = pb.ModelMetadataResponse(
            name=meta.name, versions=meta.versions, platform=meta.platform
        )
        for tensor in meta.inputs:
            response.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        for tensor in meta.outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        return response

    async def _model_infer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        self._authorize(context, self._inference_token, "inference")
        limits = self.dataplane.config.limits
        inputs = inputs_from_request(request, max_elements=limits.max_elements)
        part, outputs = await self.dataplane.infer(
            request.model_name,
            request.model_version or None,
            inputs,
            requested=requested_outputs(request),
            key=request.id or None,  # a rollout's sticky routing key
        )
        return response_for(
            request,
            outputs,
            model_version=part.release.rpartition(":")[2],
            parameters={"release": part.release, "release_digest": part.release_digest},
        )

    async def _repository_index(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        self._authorize(context, self._management_token, "management")
        response = pb.RepositoryIndexResponse()
        for status in self.dataplane.index(only_ready=request.ready):
            response.models.add(
                name=status.name, version=status.version, state=status.state, reason=status.reason
            )
        return response

    async def _repository_load(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        self._authorize(context, self._management_token, "management")
        await self.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def _repository_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        from headrace.serving._proto import oip_v2_pb2 as pb

        self._authorize(context, self._management_token, "management")
        await self.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _parse(message: Any, raw: bytes) -> Any:
    try:
        return message.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError, or a RecursionError on deep nesting
        raise InvalidInputError(
            f"Request is not a valid {message.DESCRIPTOR.full_name} message "
            f"({type(exc).__name__}): send the Open Inference Protocol's messages"
        ) from None


async def _abort(context: Context, exc: BaseException, status: int) -> None:
    if status >= 500 and not isinstance(exc, HeadraceError):
        _log.error("gRPC request failed", exc_info=exc)
        message = f"Internal server error ({type(exc).__name__}); see the server log"
    else:
        if status == 500:
            _log.warning("gRPC request failed: %s", exc)
        message = str(exc)
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, OverloadedError):
        trailers = (("retry-after", str(exc.retry_after)),)
    elif status == 503:
        trailers = (("retry-after", "1"),)
    await context.abort(grpc_code(status), message, trailers)


def _credentials(grpc: Any, tls: TLSSpec) -> Any:
    if tls.keyfile_password is not None:
        # gRPC's TLS takes an unencrypted PEM key only.
        raise ConfigError(
            f"tls.keyfile '{tls.keyfile}' is encrypted (tls.keyfile_password is set), which "
            "the gRPC server cannot use: give it an unencrypted key (e.g. `openssl pkey -in "
            "KEY -out plain.key`) kept readable by the server only, or drop grpc_port"
        )
    key = Path(tls.keyfile).read_bytes()
    chain = Path(tls.certfile).read_bytes()
    return grpc.ssl_server_credentials([(key, chain)])
