"""``headrace serve``: the Open Inference Protocol v2 server in the foreground."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from headrace.cli.context import open_registry

if TYPE_CHECKING:
    from headrace.registry.store import Registry
    from headrace.serving.config import ServeSpec

__all__ = ["serve"]


def serve(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Argument(help="Server config (YAML); every key is optional.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address [config, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [config, 8080].")] = None,
    grpc_port: Annotated[
        int | None, typer.Option("--grpc-port", help="gRPC port [config; none].")
    ] = None,
) -> None:
    """Serve every model in the registry (or the config's) over HTTP, with /metrics.

    Prints both ports and each model's release once it serves. SIGTERM/SIGINT stop
    accepting, let requests in flight finish (within connections.shutdown_timeout_s),
    then exit 0.
    """
    from headrace.serving.config import load_serve_spec, serve_spec_from_dict
    from headrace.serving.server import StopSignals, bind, build_app, uvicorn_server

    overrides = {
        key: value
        for key, value in (("host", host), ("port", port), ("grpc_port", grpc_port))
        if value is not None
    }
    if config is not None:
        settings = load_serve_spec(config, overrides=overrides)
    else:
        settings = serve_spec_from_dict({}, where="headrace serve", overrides=overrides)
    if settings.access_log:
        _log_access_to_stderr()
    sock = bind(settings)
    # A SIGTERM while the registry opens and the app builds still exits 0 (see StopSignals).
    with StopSignals() as early, sock, open_registry(ctx, must_exist=True) as registry:
        releases = _served_releases(registry, settings)
        app = build_app(registry, settings)
        server = uvicorn_server(app, settings, early=early)
        port = sock.getsockname()[1]

        async def announce() -> None:  # after start-up: the gRPC port is bound by then
            sys.stderr.write(
                _start_banner(
                    settings, port=port, grpc_port=app.dataplane.grpc_port, releases=releases
                )
            )
            sys.stderr.flush()

        app.dataplane.on_startup.append(announce)
        server.run(sockets=[sock])
        if not server.started:
            raise typer.Exit(1)


def _served_releases(registry: Registry, settings: ServeSpec) -> dict[str, str | None]:
    """Each served name and the release its alias points at (None: no such alias yet).

    Raises
    ------
    ConfigError
        When the config's ``models`` names a model the registry has no release of (a
        typo would otherwise answer 404 to every request, and only then).
    """
    from headrace.errors import ConfigError

    if settings.models is None:
        names = sorted({release.name for release in registry.list_releases()})
    else:
        names = list(settings.models)
        unknown = [name for name in names if not registry.list_releases(name)]
        if unknown:
            raise ConfigError(
                f"serve config: models lists {', '.join(repr(n) for n in unknown)}, which "
                "the registry has no release of: fix the name (`headrace releases list` "
                "shows them) or register it first - at `$.models`"
            )
    versions = {name: registry.aliases(name).get(settings.alias) for name in names}
    return {
        name: None if version is None else f"{name}:{version}" for name, version in versions.items()
    }


def _start_banner(
    settings: ServeSpec, *, port: int, grpc_port: int | None, releases: dict[str, str | None]
) -> str:
    """What ``headrace serve`` prints once it serves: where, and which release per model."""
    scheme = "https" if settings.tls is not None else "http"
    lines = [f"headrace serve: HTTP {scheme}://{settings.host}:{port}/v2 (metrics at /metrics)"]
    if grpc_port is not None:
        lines.append(f"headrace serve: gRPC {settings.host}:{grpc_port}")
    if not releases:
        lines.append("headrace serve: the registry has no models yet")
    width = max((len(name) for name in releases), default=0)
    for name, release in releases.items():
        shown = release if release is not None else f"no '{settings.alias}' release yet"
        lines.append(f"  {name:<{width}}  {shown}  (@{settings.alias})")
    return "\n".join(lines) + "\n"


def _log_access_to_stderr() -> None:
    """The app's access log (JSON lines) on stderr, apart from the root logger's."""
    logger = logging.getLogger("headrace.serving.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
