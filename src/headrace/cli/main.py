"""The ``headrace`` command: one typer app, a sub-app per noun, thin commands.

Heavy modules are imported inside commands, so ``headrace --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from headrace import __version__
from headrace.cli import alias as alias_cli
from headrace.cli import audit as audit_cli
from headrace.cli import demo as demo_cli
from headrace.cli import doctor as doctor_cli
from headrace.cli import drift as drift_cli
from headrace.cli import predict as predict_cli
from headrace.cli import register as register_cli
from headrace.cli import releases as releases_cli
from headrace.cli import rollout as rollout_cli
from headrace.cli import run as run_cli
from headrace.cli import serve as serve_cli
from headrace.cli.context import CliState

__all__ = ["app", "main"]

app = typer.Typer(
    name="headrace",
    help="Streaming inference and model operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(releases_cli.app, name="releases")
app.add_typer(alias_cli.app, name="alias")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(drift_cli.app, name="drift")
app.add_typer(rollout_cli.app, name="rollout")
app.command("register")(register_cli.register)
app.command("predict")(predict_cli.predict)
app.command("rollback")(alias_cli.rollback)
app.command("doctor")(doctor_cli.doctor)
app.command("demo")(demo_cli.demo)
app.command("run")(run_cli.run)
app.command("replay")(run_cli.replay)
app.command("serve")(serve_cli.serve)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headrace {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    registry: Annotated[
        str | None,
        typer.Option(help="Registry URL (sqlite:///… or postgresql://…); env HEADRACE_REGISTRY."),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(help="Artifact store URL (file://… or s3://…); env HEADRACE_ARTIFACTS."),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="Directory of the embedded defaults; env HEADRACE_HOME [./.headrace]."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """headrace: take a model from a notebook to a live stream and keep it honest there."""
    ctx.obj = CliState(registry=registry, artifacts=artifacts, home=home)


def _plain_help(command: Any) -> None:
    """Make every help screen say what it means, for `command` and its subcommands.

    - Defaults are written ``[like this]`` in help texts; rich would take
      ``[config, 8080]`` for a style tag and print "HTTP port ." instead, so brackets are
      escaped.
    - Typer writes a required argument ``{ref}`` in the usage line, which reads as a
      template to fill in; usage shows ``REF`` (``[CONFIG]`` when optional) as every
      other CLI does.
    """
    from rich.markup import escape

    for param in command.params:
        help_text = getattr(param, "help", None)
        if help_text:
            param.help = escape(help_text)
        # typer vendors its own click: recognise arguments by their kind, not their class
        if param.param_type_name == "argument" and hasattr(param, "_usage_display_name"):
            name = (param.metavar or param.name or "arg").upper()
            shown = name if param.required else f"[{name}]"
            shown += "..." if param.nargs != 1 else ""
            setattr(param, "_usage_display_name", lambda shown=shown: shown)  # noqa: B010
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


def main(argv: list[str] | None = None) -> None:
    """Entry point: domain errors become ``error: …`` and exit 1; usage errors exit 2.

    Typer's standalone mode prints usage errors and exits 2 by itself; only headrace's
    own errors get past it, and they are one line on stderr, never a traceback.
    """
    from headrace._redact import install_log_redaction, redact_text
    from headrace.errors import HeadraceError

    install_log_redaction()
    command = typer.main.get_command(app)
    _plain_help(command)
    try:
        command.main(args=argv, prog_name="headrace")
    except HeadraceError as exc:
        sys.stderr.write(f"error: {redact_text(' '.join(str(exc).split()))}\n")
        sys.exit(1)
