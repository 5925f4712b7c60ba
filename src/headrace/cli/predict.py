"""``headrace predict``: batch scoring through the same inference core as the stream.

Exit codes, so a scheduled job fails loudly rather than shipping an empty file:
0 scored (within ``--max-reject-ratio``), 1 an error (unknown release, unreadable
input, ...), 2 a usage error, 3 no row could be scored, 4 more rows rejected than
``--max-reject-ratio`` allows. The output files are written in every case but 1 and 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_json

if TYPE_CHECKING:
    from headrace.inference.files import BatchSummary

__all__ = [
    "EXIT_NOTHING_SCORED",
    "EXIT_TOO_MANY_REJECTED",
    "default_output",
    "parse_keep",
    "predict",
    "verdict",
]

EXIT_NOTHING_SCORED = 3
"""No row of the input could be scored (every row rejected, or no data rows)."""

EXIT_TOO_MANY_REJECTED = 4
"""The rejected share of the rows exceeds ``--max-reject-ratio``."""


def default_output(input_path: Path) -> Path:
    """``data.csv`` -> ``data.predictions.csv`` beside the input."""
    suffix = (
        input_path.suffix
        if input_path.suffix.lower() in (".csv", ".parquet", ".jsonl")
        else ".jsonl"
    )
    return input_path.with_name(f"{input_path.stem}.predictions{suffix}")


def parse_keep(value: str | None) -> list[str]:
    """``id,region`` -> ``["id", "region"]``; empty names are dropped."""
    if not value:
        return []
    return [name.strip() for name in value.split(",") if name.strip()]


def verdict(*, rows: int, predicted: int, max_reject_ratio: float | None) -> tuple[int, str]:
    """The exit code of a scoring run and, when it is not 0, why (one line).

    Parameters
    ----------
    rows
        Data rows read.
    predicted
        Rows scored.
    max_reject_ratio
        The largest accepted share of rejected rows, or None for any share.
    """
    if predicted == 0:
        why = "the input has no data rows" if rows == 0 else f"all {rows:,} rows were rejected"
        return EXIT_NOTHING_SCORED, f"no row could be scored: {why}"
    rejected = rows - predicted
    if max_reject_ratio is not None and rejected / rows > max_reject_ratio:
        return (
            EXIT_TOO_MANY_REJECTED,
            f"{rejected:,} of {rows:,} rows rejected ({rejected / rows:.1%}), more than "
            f"--max-reject-ratio {max_reject_ratio:g} allows",
        )
    return 0, ""


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
    keep: Annotated[
        str | None,
        typer.Option(
            metavar="COL[,COL]",
            help="Input columns (an id, pass-through values) copied into the output.",
        ),
    ] = None,
    max_reject_ratio: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="R",
            help="Exit 4 when the rejected share of the rows exceeds R (0 to 1).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Score every row of a file: one output row per valid input row, a reject per bad one.

    Output columns: row, the --keep columns, prediction, score (a binary classifier's
    P(positive class); the predicted class's probability for more classes), proba_CLASS
    per class, release, release_digest. The rejects file is written only when a row was
    rejected. Exit 0 scored, 1 error, 2 usage, 3 no row scored, 4 too many rejected.
    """
    import sys

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from headrace.errors import InputFileError
    from headrace.inference.files import score_file
    from headrace.inference.loading import load_release

    if not input_path.is_file():
        raise InputFileError(f"Input file '{input_path}' does not exist. Check --input.")
    output = output or default_output(input_path)
    rejects = rejects or output.with_name(f"{output.stem}.rejects.jsonl")
    with open_registry(ctx, must_exist=True) as registry:
        # One pass over a file: no first-call latency to hide, and every row that fails
        # is reported as a reject anyway, so no warm-up.
        service = load_release(registry, ref, warmup_rows=0).service
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
            keep=parse_keep(keep),
        )
    code, why = verdict(
        rows=summary.rows, predicted=summary.predicted, max_reject_ratio=max_reject_ratio
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
                "rejects": summary.rejects_path,
                "exit_code": code,
            }
        )
    else:
        _print_summary(summary, release=service.release)
    if code:
        where = f"; see {summary.rejects_path}" if summary.rejects_path else ""
        sys.stderr.write(f"error: {why}{where}\n")
        raise typer.Exit(code)


def _print_summary(summary: BatchSummary, *, release: str) -> None:
    rate = summary.rows / summary.seconds if summary.seconds > 0 else float("inf")
    typer.echo(
        f"{release}: {summary.predicted:,} predicted, {summary.rejected:,} rejected "
        f"of {summary.rows:,} rows in {summary.seconds:.2f}s ({rate:,.0f} rows/s)"
    )
    typer.echo(f"predictions: {summary.output_path}")
    if summary.rejects_path is not None:
        typer.echo(f"rejects:     {summary.rejects_path}")
