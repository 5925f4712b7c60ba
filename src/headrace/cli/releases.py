"""``headrace releases list|show|diff``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import human, print_aligned, print_json, print_table

__all__ = ["app"]

app = typer.Typer(help="List, show and compare releases.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("list")
def list_releases(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this release name.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List releases with their versions, digests and aliases."""
    with open_registry(ctx, must_exist=True) as registry:
        rows = registry.list_releases(name)
    if as_json:
        print_json(rows)
        return
    print_table(
        "releases",
        ["release", "flavor", "aliases", "digest", "created", "by"],
        [
            (
                f"{r.name}:{r.version}",
                r.flavor,
                ", ".join(r.aliases),
                r.digest[:16],
                r.created_at[:19],
                r.created_by,
            )
            for r in rows
        ],
    )


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME:VERSION or NAME@ALIAS.")],
    as_json: JsonFlag = False,
) -> None:
    """Show a release's manifest (model files, schema, data fingerprint, metrics, lineage)."""
    import msgspec

    with open_registry(ctx, must_exist=True) as registry:
        release = registry.get(ref)
        history = registry.alias_history(release.name)
        current = registry.aliases(release.name)
        tags = registry.release_tags(release.ref)
    manifest = release.manifest
    pointing = sorted(a for a, v in current.items() if v == manifest.version)
    if as_json:
        print_json(
            {
                "release": manifest.ref,
                "digest": release.digest,
                "aliases": pointing,
                "tags": tags,
                "manifest": msgspec.to_builtins(manifest),
                "alias_history": history,
            }
        )
        return
    lines = [
        f"release      {manifest.ref}",
        f"digest       {release.digest}",
        f"aliases      {', '.join(pointing) or '-'}",
        f"tags         {', '.join(f'{k}={v}' for k, v in tags.items()) or '-'}",
        f"flavor       {manifest.model.flavor} (entry {manifest.model.entry})",
        f"created      {manifest.created_at} by {manifest.created_by}",
        f"parent       {manifest.parent or '-'}",
        f"code         {manifest.code_version or '-'}",
        "files        "
        + ", ".join(f"{f.path} ({f.size} B, {f.sha256[:12]})" for f in manifest.all_files()),
        "schema       " + ", ".join(f"{f.name}:{f.type}" for f in manifest.schema.fields),
    ]
    signature = manifest.input_signature
    if signature is not None:
        how = "a DataFrame" if signature.frame else "a matrix"
        lines.append(
            f"signature    {len(signature.inputs)} inputs in the model's order, as {how} "
            f"({signature.source or 'from the schema'}): {', '.join(signature.names)}"
        )
        if signature.classes is not None:
            lines.append(f"classes      {', '.join(str(c) for c in signature.classes)}")
    if manifest.data is not None:
        lines.append(
            f"data         {manifest.data.source}: {manifest.data.rows} rows, "
            f"sha256 {manifest.data.sha256}"
        )
    if manifest.metrics:
        lines.append(f"metrics      {human(manifest.metrics)}")
    config = {
        k: v for k, v in msgspec.to_builtins(manifest.config).items() if v not in (None, {}, [])
    }
    if config:
        lines.append(f"config       {human(config)}")
    typer.echo("\n".join(lines))


@app.command("diff")
def diff(
    ctx: typer.Context,
    a: Annotated[
        str, typer.Argument(metavar="REF_A", help="First release (NAME:V or NAME@ALIAS).")
    ],
    b: Annotated[str, typer.Argument(metavar="REF_B", help="Second release.")],
    as_json: JsonFlag = False,
) -> None:
    """What changed between two releases: model, schema, features, config, data, metrics."""
    from headrace.release.diff import diff_manifests, diff_rows

    with open_registry(ctx, must_exist=True) as registry:
        result = diff_manifests(registry.get(a).manifest, registry.get(b).manifest)
    if as_json:
        print_json(result)
        return
    rows = [
        (part, "unchanged", "", "") if not what else (part, what, left, _with_delta(right))
        for part, what, left, right in diff_rows(result)
    ]
    print_aligned(["part", "what", result.a, result.b], rows)


def _with_delta(value: Any) -> Any:
    """A metric's ``(b, b - a)`` as ``0.93 (+0.02)``; anything else as it is."""
    if isinstance(value, tuple):
        right, delta = value
        return f"{human(right)} ({delta:+g})"
    return value
