"""``headrace drift check``: is this file still like the reference (a file or a release)?"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from headrace.cli.context import open_registry
from headrace.cli.output import print_json

__all__ = ["app", "check"]

app = typer.Typer(help="Drift of data against a reference.", no_args_is_help=True)


def _load_reference(ctx: typer.Context, ref: str) -> Any:
    from headrace.monitoring.drift import DriftReference
    from headrace.monitoring.drift.files import DRIFT_FILE_SUFFIXES, read_drift_file

    path = Path(ref)
    if path.exists() or path.suffix.lower() in DRIFT_FILE_SUFFIXES:
        return DriftReference.from_table(read_drift_file(path, role="reference"), source=ref)
    with open_registry(ctx, must_exist=True) as registry:
        release = registry.get(ref)
        return DriftReference.from_release(registry, release)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"


@app.command("check")
def check(
    ctx: typer.Context,
    reference: Annotated[
        str,
        typer.Option(
            "--reference", "-r", help="Parquet/CSV file, or a release (NAME:VERSION, NAME@ALIAS)."
        ),
    ],
    current: Annotated[Path, typer.Option("--current", "-c", help="Parquet/CSV file to test.")],
    report: Annotated[
        Path | None, typer.Option("--report", help="Write an HTML report with a plot a column.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    alpha: Annotated[float, typer.Option(help="False-alarm level of the whole check.")] = 0.05,
    correction: Annotated[
        str, typer.Option(help="Across columns: bonferroni, bh (Benjamini-Hochberg) or none.")
    ] = "bonferroni",
    method: Annotated[str, typer.Option(help="KS p-values: auto, exact or asymp.")] = "auto",
    multivariate: Annotated[
        bool, typer.Option(help="Also test all numeric columns together (MMD).")
    ] = True,
) -> None:
    """Test every common column; exit 0 whether or not drift was found (1 on errors)."""
    from headrace.errors import ConfigError
    from headrace.monitoring.drift import check_drift, columns_from_table
    from headrace.monitoring.drift.files import read_drift_file

    if correction not in ("bonferroni", "bh", "none"):
        raise ConfigError(f"Unknown --correction '{correction}': use bonferroni, bh or none.")
    if method not in ("auto", "exact", "asymp"):
        raise ConfigError(f"Unknown --method '{method}': use auto, exact or asymp.")
    ref = _load_reference(ctx, reference)
    columns = columns_from_table(read_drift_file(current, role="current"))
    result = check_drift(
        ref,
        columns,
        alpha=alpha,
        correction=correction,  # type: ignore[arg-type]
        method=method,  # type: ignore[arg-type]
        multivariate=multivariate,
    )
    if report is not None:
        from headrace.monitoring.drift.report import render_html

        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            render_html(result, ref, columns, current_name=current.name), encoding="utf-8"
        )
    if as_json:
        print_json({**result.to_dict(), "report": None if report is None else str(report)})
        return
    _print_result(result, report)


def _print_result(result: Any, report: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from headrace.monitoring.drift.report import format_p

    table = Table(title=f"Drift of {result.current_rows:,} rows against {result.reference}")
    for name, justify in (
        ("column", "left"),
        ("kind", "left"),
        ("test", "left"),
        ("statistic", "right"),
        ("p-value", "right"),
        ("corrected p", "right"),
        ("PSI", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in result.columns:
        table.add_row(
            c.column,
            c.kind,
            c.test,
            _fmt(c.statistic),
            format_p(c.p_value),
            format_p(c.adjusted_p_value),
            _fmt(c.psi),
            "[bold red]drift[/]" if c.drifted else "[green]ok[/]",
        )
    # Piped output gets rich's 80 columns, too narrow for eight columns of numbers.
    console = Console(soft_wrap=True, width=max(Console().width, 120))
    console.print(table)
    drifted = result.drifted_columns
    level = f"({result.correction}, alpha {result.alpha})"
    summary = (
        f"{len(drifted)} of {len(result.columns)} columns drifted {level}: {', '.join(drifted)}"
        if drifted
        else f"no drift in {len(result.columns)} columns {level}"
    )
    console.print(summary, highlight=False)
    if result.multivariate is not None:
        m = result.multivariate
        state = "drift" if m.p_value <= result.alpha else "ok"
        console.print(
            f"all numeric columns together (MMD): p = {format_p(m.p_value)} ({state})",
            highlight=False,
        )
    if result.skipped:
        console.print(f"not in the reference: {', '.join(result.skipped)}", highlight=False)
    if report is not None:
        console.print(f"report: {report}", highlight=False)
