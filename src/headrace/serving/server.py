"""Putting the server together: repository, metrics, data plane, the HTTP app and the gRPC
server, served by uvicorn.

`build_app` wires both transports to one `DataPlane`; the app's ASGI lifespan (uvicorn's)
starts the data plane, which starts the gRPC server after the repository and stops it
before the batchers, and `uvicorn_server`'s stop drains the data plane first.

uvicorn with uvloop and httptools, without uvicorn's access log (a log line per request
costs as much as a small model call; ``/metrics`` counts every request instead; the
config's ``access_log`` turns on the app's own JSON lines). TLS is uvicorn's, from the
config's certificate and key. The ``connections`` limits are uvicorn's where it has them
(keep-alive, connection cap, graceful-shutdown bound) and `protocol`'s where it has not
(header deadline and size); the body deadline is the app's.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from headrace.errors import ConfigError, DependencyMissingError
from headrace.monitoring.rollbacks import RollbackCollector
from headrace.serving.app import InferenceApp
from headrace.serving.config import ServeSpec
from headrace.serving.dataplane import DataPlane
from headrace.serving.logfilter import rate_limit
from headrace.serving.metrics import ServerMetrics, new_registry
from headrace.serving.protocol import guarded_httptools_protocol
from headrace.serving.repository import ModelRepository

if TYPE_CHECKING:
    import prometheus_client
    import uvicorn

    from headrace.registry.store import Registry

__all__ = ["StopSignals", "bind", "build_app", "grpc_grace_s", "uvicorn_server"]

_STOPS = (signal.SIGINT, signal.SIGTERM)

_log = logging.getLogger(__name__)


def build_app(
    registry: Registry,
    config: ServeSpec,
    *,
    metrics_registry: prometheus_client.CollectorRegistry | None = None,
    tracer_provider: Any = None,
) -> InferenceApp:
    """The ASGI app over a registry: one repository and one metrics registry shared by both.

    Parameters
    ----------
    registry
        Where releases and aliases live (kept open for the server's life).
    config
        The server config.
    metrics_registry
        Where every metric goes; a fresh one when omitted.
    tracer_provider
        The OpenTelemetry tracer provider for the config's ``tracing`` section; None
        builds one (`headrace.monitoring.tracing.tracer_provider`: OTLP when configured). Unused
        without that section.
    """
    metrics_registry = metrics_registry if metrics_registry is not None else new_registry()
    repository = ModelRepository(
        registry,
        names=config.models,
        alias=config.alias,
        memory_budget_bytes=config.memory_budget_bytes,
        overcommit=config.overcommit,
        poll_interval_s=config.poll_interval_s,
        metrics_registry=metrics_registry,
    )
    dataplane: DataPlane

    def batchers() -> dict[str, Any]:
        return dict(dataplane.batchers)

    metrics = ServerMetrics(metrics_registry, batchers=batchers)
    dataplane = DataPlane(repository, config=config, metrics=metrics)
    tracer = None
    if config.tracing is not None:
        if tracer_provider is None:
            from headrace.monitoring.tracing import tracer_provider as new_provider

            tracer_provider = new_provider(
                "headrace-serve", sample_ratio=config.tracing.sample_ratio
            )
        tracer = tracer_provider.get_tracer("headrace.serving")
    app = InferenceApp(dataplane, tracer=tracer)
    # headrace_rollbacks_total of the models this server answered for, from the registry.
    metrics_registry.register(RollbackCollector(registry, models=lambda: sorted(dataplane.served)))
    if config.grpc_port is not None:
        # GRPCInferenceService on the same event loop and data plane (repository,
        # batchers, limits, tokens, metrics); it starts and stops with the data plane.
        from headrace.serving.grpc_server import GrpcServer

        GrpcServer(
            dataplane,
            host=config.host,
            port=config.grpc_port,
            tls=config.tls,
            grace_s=grpc_grace_s(config),
        ).attach()
    return app


def grpc_grace_s(config: ServeSpec) -> float:
    """The gRPC server's share of ``connections.shutdown_timeout_s``.

    uvicorn drains HTTP first and runs the app's shutdown (which stops gRPC) after, so
    the two shares add up to the bound: a third for gRPC (at most 5 s), the rest HTTP's.
    """
    return min(5.0, config.connections.shutdown_timeout_s / 3)


def bind(config: ServeSpec) -> socket.socket:
    """The HTTP socket, bound (not yet listening) to the config's host and port.

    Binding before the server starts turns a taken port into a one-line error, and a
    port of 0 into the free port the kernel picked (``sock.getsockname()``).

    Raises
    ------
    ConfigError
        When the address cannot be bound (taken, not local, not permitted).
    """
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {config.host}:{config.port}: {exc.strerror or exc}; choose "
            "another --port (or `port:` in the config), or stop what holds it"
        ) from None
    sock.set_inheritable(True)
    return sock


class StopSignals:
    """SIGTERM/SIGINT caught while ``headrace serve`` starts up, before its server runs.

    Without it a stop requested during start-up (opening the registry, importing the
    server) killed the process with the signal (status -15); with it the server, once it
    runs, sees the request and stops at once with exit status 0. Use it as a context
    manager from the main thread (elsewhere it does nothing); `received` lists what came.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def _record(self, sig: int, frame: object) -> None:
        self.received.append(sig)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._record) for sig in _STOPS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def uvicorn_server(
    app: InferenceApp, config: ServeSpec, *, early: StopSignals | None = None
) -> uvicorn.Server:
    """A uvicorn server for `app` on the config's host, port and TLS (``.run()`` it).

    `early`: the stop signals caught before it runs; one there stops it as soon as it
    started.

    Raises
    ------
    DependencyMissingError
        When uvicorn, uvloop or httptools is not installed.
    """
    try:
        import httptools  # noqa: F401
        import uvicorn
        import uvloop  # noqa: F401
    except ImportError as exc:
        raise DependencyMissingError(exc.name or "uvicorn", "server", "headrace serve") from exc
    tls: dict[str, Any] = {}
    if config.tls is not None:
        tls = {
            "ssl_certfile": config.tls.certfile,
            "ssl_keyfile": config.tls.keyfile,
            "ssl_keyfile_password": config.tls.keyfile_password,
        }
    connections = config.connections
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http=guarded_httptools_protocol(
            header_timeout_s=connections.header_timeout_s,
            max_header_bytes=connections.max_header_bytes,
        ),
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        backlog=4096,
        timeout_keep_alive=connections.keepalive_timeout_s,  # type: ignore[arg-type]
        limit_concurrency=connections.max_connections,
        timeout_graceful_shutdown=connections.shutdown_timeout_s  # type: ignore[arg-type]
        - grpc_grace_s(config),
        **tls,
    )
    # uvicorn warns on every malformed request and every request past the cap: a
    # client could fill the log with them.
    rate_limit(logging.getLogger("uvicorn.error"))
    server: uvicorn.Server = _server_class(uvicorn)(settings)
    server.early_stops = early  # type: ignore[attr-defined]
    # Half the HTTP share of the bound for requests still waiting (a stalled upload, a
    # slow batch) to be answered 503; the other half for those answers to go out.
    drain_within_s = (connections.shutdown_timeout_s - grpc_grace_s(config)) / 2
    server.on_stop = partial(app.drain, within_s=drain_within_s)  # type: ignore[attr-defined]
    return server


def _server_class(uvicorn: Any) -> Any:
    """uvicorn's server, except that a SIGTERM/SIGINT stops it and the process exits 0.

    uvicorn re-raises the signal it caught once it has shut down, so the process dies
    of it (status -15); a server that drained cleanly should report success.
    """

    class Server(uvicorn.Server):  # type: ignore[misc]
        early_stops: StopSignals | None = None
        on_stop: Callable[[], None] | None = None

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if self.on_stop is not None:
                self.on_stop()
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOPS}
            if self.early_stops is not None and self.early_stops.received:
                self.should_exit = True  # asked to stop while starting up
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server
