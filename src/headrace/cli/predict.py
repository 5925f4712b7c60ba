"""``headrace predict``: batch scoring through the same inference core as the stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_json

__all__ = ["default_output", "predict"]


def default_output(input_path: Path) -> Path:
    """``data.csv`` -> ``data.predictions.csv`` beside the input."""
    suffix = (
        input_path.suffix
        if input_path.suffix.lower() in (".csv", ".parquet", ".jsonl")
        else ".jsonl"
    )
    return input_path.with_name(f"{input_path.stem}.predictions{suffix}")


def predict(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, NAME@ALIAS or NAME (its champion).")],
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="CSV, Parquet or JSONL file to score.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Predictions file [INPUT.predictions.EXT]."),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Rows that failed validation, with reasons [OUTPUT.rejects.jsonl]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Score every row of a file: one output row per valid input row, a reject per bad one."""
    import sys

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from headrace.errors import InputFileError
    from headrace.inference.files import score_file
    from headrace.inference.loading import load_service

    if not input_path.is_file():
        raise InputFileError(f"Input file '{input_path}' does not exist. Check --input.")
    output = output or default_output(input_path)
    rejects = rejects or output.with_name(f"{output.stem}.rejects.jsonl")
    with open_registry(ctx) as registry:
        service = load_service(registry, ref)
    progress = Progress(
        TextColumn("scoring {task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task(input_path.name, total=None)

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        summary = score_file(
            service,
            input_path=input_path,
            output_path=output,
            rejects_path=rejects,
            progress=advance,
        )
    if as_json:
        print_json(
            {
                "release": service.release,
                "digest": service.release_digest,
                "rows": summary.rows,
                "predicted": summary.predicted,
                "rejected": summary.rejected,
                "seconds": summary.seconds,
                "output": str(output),
                "rejects": str(rejects) if summary.rejected else None,
            }
        )
        return
    rate = summary.rows / summary.seconds if summary.seconds > 0 else float("inf")
    typer.echo(
        f"{service.release}: {summary.predicted:,} predicted, {summary.rejected:,} rejected "
        f"of {summary.rows:,} rows in {summary.seconds:.2f}s ({rate:,.0f} rows/s)"
    )
    typer.echo(f"predictions: {output}")
    if summary.rejected:
        typer.echo(f"rejects:     {rejects}")
