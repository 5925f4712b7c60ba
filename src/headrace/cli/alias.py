"""``headrace alias set`` and ``headrace rollback``."""

from __future__ import annotations

from typing import Annotated

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_json, print_table

__all__ = ["app", "rollback"]

app = typer.Typer(
    help="Move and inspect aliases (champion, challenger, shadow, …).", no_args_is_help=True
)


@app.command("set")
def set_alias(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    version: Annotated[int, typer.Argument(help="Version to point at.", min=1)],
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Point at a release that did not pass verification (needs --reason; audited).",
        ),
    ] = False,
) -> None:
    """Point NAME@ALIAS at VERSION (a release that passed verification, unless --force)."""
    with open_registry(ctx, must_exist=True) as registry:
        moved = registry.set_alias(name, alias, version, reason=reason, force=force)
    typer.echo(f"{name}@{alias}: {moved.from_version or '-'} -> {moved.to_version}")


@app.command("history")
def history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    alias: Annotated[str | None, typer.Argument(help="Only this alias.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every move of NAME's aliases: who, when, from, to, why."""
    with open_registry(ctx, must_exist=True) as registry:
        events = registry.alias_history(name, alias)
    if as_json:
        print_json(events)
        return
    print_table(
        f"{name} alias history",
        ["at", "alias", "kind", "from", "to", "actor", "reason"],
        [
            (e.at[:19], e.alias, e.kind, e.from_version, e.to_version, e.actor, e.reason)
            for e in events
        ],
    )


def rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    to: Annotated[int | None, typer.Option("--to", help="Version to roll back to.", min=1)] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")] = "",
) -> None:
    """Move NAME@champion back to its previous target (or --to VERSION)."""
    with open_registry(ctx, must_exist=True) as registry:
        moved = registry.rollback(name, to=to, reason=reason)
    typer.echo(f"{name}@champion: {moved.from_version} -> {moved.to_version}")
