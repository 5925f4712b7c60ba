"""``headrace audit verify|log``."""

from __future__ import annotations

from typing import Annotated

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_aligned, print_json

__all__ = ["app"]

app = typer.Typer(help="Verify and read the hash-chained audit log.", no_args_is_help=True)


@app.command("verify")
def verify(ctx: typer.Context) -> None:
    """Walk the chain; name the first record altered, removed or reordered (exit 1)."""
    with open_registry(ctx, must_exist=True) as registry:
        count = registry.verify_audit()
        head = registry.audit_log()[-1].hash if count else "-"
    typer.echo(f"audit chain ok: {count} records, head {head}")


@app.command("log")
def log(
    ctx: typer.Context,
    subject: Annotated[
        str | None, typer.Argument(help="Only records about this release name or ref.")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action (register, alias.set…).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List audit records, oldest first."""
    with open_registry(ctx, must_exist=True) as registry:
        records = registry.audit_log(subject=subject, action=action)
    if as_json:
        print_json(records)
        return
    print_aligned(
        ["#", "at", "actor", "action", "subject", "hash", "details"],
        [(r.seq, r.at[:19], r.actor, r.action, r.subject, r.hash, r.details) for r in records],
    )
