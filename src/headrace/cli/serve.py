"""``headrace serve``: the Open Inference Protocol v2 server in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from headrace.cli.context import open_registry

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

    SIGTERM/SIGINT stop accepting, let requests in flight finish, then exit 0.
    """
    from headrace.serving.config import load_serve_config, serve_config_from_dict
    from headrace.serving.server import StopSignals, bind, build_app, uvicorn_server

    overrides = {
        key: value
        for key, value in (("host", host), ("port", port), ("grpc_port", grpc_port))
        if value is not None
    }
    if config is not None:
        settings = load_serve_config(config, overrides=overrides)
    else:
        settings = serve_config_from_dict({}, where="headrace serve", overrides=overrides)
    sock = bind(settings)
    # A SIGTERM while the registry opens and the app builds still exits 0 (see StopSignals).
    with StopSignals() as early, sock, open_registry(ctx) as registry:
        app = build_app(registry, settings)
        server = uvicorn_server(app, settings, early=early)
        port = sock.getsockname()[1]
        scheme = "https" if settings.tls is not None else "http"
        served = ", ".join(settings.models) if settings.models else "every model in the registry"
        sys.stderr.write(
            f"headrace serve: {scheme}://{settings.host}:{port}/v2 serving {served} "
            f"(bare names -> @{settings.alias}); metrics at /metrics\n"
        )
        server.run(sockets=[sock])
        if not server.started:
            raise typer.Exit(1)
