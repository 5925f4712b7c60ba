"""``headrace register``: build, verify and record a release."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_json

__all__ = ["register"]

_Existing = typer.Option(exists=True, dir_okay=False, readable=True)


def register(
    ctx: typer.Context,
    path: Annotated[
        str, typer.Argument(help="Model file, model directory, or FILE.py:ATTR (python flavor).")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Release name, e.g. fraud.")],
    flavor: Annotated[
        str | None,
        typer.Option(help="sklearn, lightgbm, xgboost, onnx, torch or python [from the file]."),
    ] = None,
    entry: Annotated[
        str | None,
        typer.Option(
            help="With a directory PATH: its main file, or FILE.py:ATTR / MODULE:ATTR (python)."
        ),
    ] = None,
    schema: Annotated[Path | None, typer.Option(help="Input schema (YAML/JSON).")] = None,
    features: Annotated[Path | None, typer.Option(help="Feature definitions (YAML/JSON).")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Training data (CSV/Parquet/JSONL): fingerprint, profile.")
    ] = None,
    metrics: Annotated[Path | None, typer.Option(help="Evaluation metrics (JSON/YAML).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Pre/post-processing config (threshold, labels…).")
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Point this alias (e.g. champion) at the new release.")
    ] = None,
    parent: Annotated[
        str | None, typer.Option(help="Parent release [the name's current champion].")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            help="Load the model, read its signature and score the training sample first."
        ),
    ] = True,
    allow_duplicate: Annotated[
        bool,
        typer.Option(
            "--allow-duplicate", help="Make a new version even if identical content is registered."
        ),
    ] = False,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            help="Ed25519 private key (PEM) to sign the release with.", exists=True, dir_okay=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Register a model with its schema, features, config, data fingerprint and metrics."""
    from headrace.audit.keys import load_ed25519_signer
    from headrace.errors import ConfigError
    from headrace.inference.contract import check_draft
    from headrace.release.bundle import build_draft
    from headrace.runtimes.loader import FLAVORS, detect_flavor

    model_path = Path(path)
    if flavor is None:
        plain = Path(path.rsplit(":", 1)[0]) if path.count(":") == 1 else model_path
        flavor = detect_flavor(plain)
        if flavor is None:
            raise ConfigError(
                f"Cannot tell the flavor of '{path}' from its name: pass --flavor "
                f"(one of {', '.join(FLAVORS)})."
            )
    elif flavor not in FLAVORS:
        raise ConfigError(f"Unknown flavor '{flavor}': use one of {', '.join(FLAVORS)}.")
    for label, option in (
        ("--schema", schema),
        ("--features", features),
        ("--data", data),
        ("--metrics", metrics),
        ("--config", config),
    ):
        if option is not None and not option.is_file():
            raise ConfigError(f"{label} file '{option}' does not exist or is not a file.")

    with tempfile.TemporaryDirectory(prefix="headrace-register-") as scratch:
        draft = build_draft(
            model_path,
            name=name,
            flavor=flavor,
            workdir=Path(scratch),
            schema_path=schema,
            features_path=features,
            data_path=data,
            metrics_path=metrics,
            config_path=config,
            entry=entry,
        )
        if verify:
            # The model's own signature decides the column order; a release whose model
            # disagrees with its schema or answers differently through headrace is refused.
            draft, _ = check_draft(draft, schema_given=schema is not None)
        with open_registry(ctx) as registry:
            release = registry.register(
                draft,
                alias=alias,
                parent=parent,
                allow_duplicate=allow_duplicate,
                verification="passed" if verify else "skipped",
                sign_key=None if sign_key is None else load_ed25519_signer(sign_key),
            )
    if release.duplicate_of is not None:
        typer.echo(
            f"identical to {release.duplicate_of}: no new version "
            "(pass --allow-duplicate to make one)",
            err=True,
        )
    if as_json:
        print_json(
            {
                "release": release.ref,
                "digest": release.digest,
                "alias": alias,
                "duplicate_of": release.duplicate_of,
            }
        )
        return
    typer.echo(f"{release.ref} {release.digest}")
    if alias:
        typer.echo(f"{release.name}@{alias} -> {release.version}", err=True)
