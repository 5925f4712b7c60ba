"""``headrace demo``: the whole story on embedded defaults, with progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headrace.cli.output import print_json

__all__ = ["demo"]


def demo(
    events: Annotated[int, typer.Option(help="Transactions to stream.", min=100)] = 50_000,
    home: Annotated[
        Path, typer.Option(help="Directory for the demo's registry and outputs (wiped first).")
    ] = Path(".headrace/demo"),
    rate: Annotated[
        float, typer.Option(help="Events per second the producer offers.", min=100)
    ] = 25_000.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train, register, stream, score and audit a fraud model, on nothing but this machine."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from headrace.demo.story import run_demo

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("    streaming"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    task = bar.add_task("events", total=events)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        result = run_demo(
            events=events,
            home=home.absolute(),
            rate=rate,
            say=lambda line: console.print(line, highlight=False),
            progress=advance,
        )
    stats = result.stats
    if as_json:
        print_json(
            {
                "release": result.release,
                "digest": result.digest,
                "auc": result.auc,
                "events": result.events,
                "malformed_sent": dict(result.malformed_sent),
                "flagged": result.flagged,
                "outputs_file": str(result.outputs_path),
                "dead_letters_file": str(result.dead_letters_path),
                "audit_records": result.audit_records,
                **stats,
            }
        )
        return
    processing = stats["processing_ms"]
    e2e = stats["end_to_end_ms"]
    lines = [
        "",
        f"summary of headrace demo ({result.release}, AUC {result.auc:.3f})",
        f"  events        {stats['events']:,} in {stats['seconds']:.1f}s "
        f"({stats['events_per_s']:,.0f} events/s offered at {rate:,.0f}/s)",
        f"  outputs       {stats['outputs']:,} scored, {result.flagged:,} flagged as fraud",
        f"  latency       end to end p50 {e2e['p50']:.1f} ms, p99 {e2e['p99']:.1f} ms; "
        f"per batch p50 {processing['p50']:.1f} ms, p99 {processing['p99']:.1f} ms",
        f"  dead letters  {stats['dead_letters']:,} (sent {sum(result.malformed_sent.values()):,}"
        " malformed)",
    ]
    for reason, count in stats["dead_letter_reasons"].items():
        lines.append(f"                {count:>5,}  {reason}")
    lines += [
        f"  outputs at    {result.outputs_path}",
        f"  dead letters  {result.dead_letters_path}",
        f"  audit chain   {result.audit_records} records, verified",
        f"  registry      {result.home / 'registry.db'}",
    ]
    typer.echo("\n".join(lines))
