"""``headrace demo``: the whole story on embedded defaults, with progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from headrace.cli.output import print_json

if TYPE_CHECKING:
    from headrace.demo.rollout import RolloutReport
    from headrace.demo.serving import ServingReport
    from headrace.demo.story import DemoResult

__all__ = ["demo"]


def demo(
    events: Annotated[
        int,
        typer.Option(help="Transactions to stream (the rollout needs about 100,000).", min=100),
    ] = 120_000,
    home: Annotated[
        Path, typer.Option(help="Directory for the demo's registry and outputs (wiped first).")
    ] = Path(".headrace/demo"),
    rate: Annotated[
        float, typer.Option(help="Events per second the producer offers.", min=100)
    ] = 10_000.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train, register, stream, drift, retrain, gate, shadow, canary, promote or roll back,
    and audit a fraud model, on nothing but this machine."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from headrace.demo.story import run_demo

    # soft_wrap: a pipe or a log file gets whole lines, not lines cut at rich's default
    # 80 columns (a terminal wraps long lines by itself)
    console = Console(stderr=True, soft_wrap=True)
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
            # escaped: a reason quoting a value in brackets is text, not rich markup
            say=lambda line: console.print(escape(line), highlight=False),
            progress=advance,
        )
    stats = result.stats
    if as_json:
        print_json(
            {
                "release": result.release,
                "digest": result.digest,
                "auc": result.auc,
                "threshold": result.threshold,
                "validation": result.validation,
                "events": result.events,
                "malformed_sent": dict(result.malformed_sent),
                "flagged": result.flagged,
                "outputs_file": str(result.outputs_path),
                "dead_letters_file": str(result.dead_letters_path),
                "audit_records": result.audit_records,
                **stats,
                "offered_per_s": rate,
                "capacity_per_s": _capacity(stats),
                "serving": _serving_json(result.serving),
                "drift": {
                    "drift_at": result.drift_at,
                    "drift_event": result.drift_event,
                    "columns": result.drift_columns,
                    "threshold": result.drift_threshold,
                    "calibration_s": result.calibration_s,
                    "calibration_checks": result.calibration_checks,
                    "alarms": result.alarms,
                    "repeated_detections": result.drift_repeats,
                    "release_tags": result.release_tags,
                    "report_file": str(result.report_path) if result.report_path else None,
                    "report_drifted_columns": result.report_drifted,
                },
                "accuracy": {"labels_sent": result.labels_sent, **(result.accuracy or {})},
                "accuracy_by_release": result.accuracy_by_release,
                "outputs_by_release": result.outputs_by_release,
                "last_outputs": {
                    "release": result.last_outputs[0],
                    "outputs": result.last_outputs[1],
                },
                "rollout": _rollout_json(result.rollout),
            }
        )
        return
    lines = [
        "",
        f"summary of headrace demo ({result.release}, AUC {result.auc:.3f}, fraud when "
        f"P(fraud) >= {result.threshold:.3f})",
        *_throughput_lines(stats, rate=rate),
        f"  outputs       {stats['outputs']:,} scored, {result.flagged:,} flagged as fraud",
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
        *_serving_lines(result.serving),
        *_drift_lines(result),
        *_rollout_lines(result),
    ]
    typer.echo("\n".join(lines))


def _capacity(stats: dict[str, Any]) -> float | None:
    """Events per second of the worker's own busy time: what it could keep up with."""
    busy = float(stats.get("busy_s") or 0.0)
    return stats["events"] / busy if busy > 0 else None


def _throughput_lines(stats: dict[str, Any], *, rate: float) -> list[str]:
    """Throughput and latency, each under what it measures.

    The events/s over the run is the producer's pace, not the worker's speed; the
    capacity is events over the worker's busy time. End-to-end latency is the time an
    event waited in the stream plus its batch's processing: when the producer offers
    events faster than the worker scores them (even for a moment: the model's first
    load, a garbage collection, another process on the machine) a queue builds and the
    wait dominates, which is why two identical runs can give a p50 of 4 ms or 400 ms.
    """
    processing = stats["processing_ms"]
    e2e = stats["end_to_end_ms"]
    capacity = _capacity(stats)
    busy = float(stats.get("busy_s") or 0.0)
    seconds = float(stats["seconds"])
    share = busy / seconds if seconds > 0 else 0.0
    lines = [
        f"  events        {stats['events']:,} in {seconds:.1f}s, at the pace the producer "
        f"offered them ({rate:,.0f}/s asked, {stats['events_per_s']:,.0f}/s over the run)",
    ]
    if capacity is not None:
        lines.append(
            f"  capacity      {capacity:,.0f} events/s: {stats['events']:,} events in "
            f"{busy:.2f}s of the worker's busy time (busy {share:.0%} of the run)"
        )
    lines.append(
        f"  latency       per batch p50 {processing['p50']:.1f} ms, p99 {processing['p99']:.1f} "
        f"ms (the worker's work); end to end p50 {e2e['p50']:.1f} ms, p99 {e2e['p99']:.1f} ms "
        "(waiting in the stream included)"
    )
    if capacity is not None and capacity < rate:
        lines.append(
            f"                the producer offered more than the worker can score "
            f"({rate:,.0f}/s > {capacity:,.0f}/s): events queued, and the end-to-end "
            "latency is mostly that wait; try a lower --rate"
        )
    return lines


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _drift_lines(result: DemoResult) -> list[str]:
    """The drift alarm, the live accuracy from the late labels, and the report's path."""
    from headrace.demo.story import alarm_evidence

    lines = [
        f"  drift         the stream drifts at event {result.drift_at:,} ({result.drift_event});"
        f" watched: {', '.join(result.drift_columns)}"
    ]
    if not result.alarms:
        lines.append("                no drift alarm")
    for alarm in result.alarms[:3]:
        lines.append(
            f"                alarm at event {alarm['event_id']}: {', '.join(alarm['columns'])}"
            f" ({alarm_evidence(alarm)})"
        )
    if len(result.alarms) > 3:
        lines.append(f"                ... {len(result.alarms) - 3} more drift episodes")
    if result.drift_repeats:
        lines.append(
            f"                the drift lasted: detected again in {result.drift_repeats} "
            "fresh windows (counted in the metrics, not re-alarmed)"
        )
    if "drift" in result.release_tags:
        lines.append(
            f"                {result.release} tagged drift={result.release_tags['drift']}"
        )
    accuracy = result.accuracy
    if accuracy is not None:
        lines.append(
            f"  live accuracy {accuracy['joined']:,} of {result.labels_sent:,} late labels "
            f"joined; last {accuracy['window']:,}: accuracy {_metric(accuracy['accuracy'])}, "
            f"precision {_metric(accuracy['precision'])}, recall {_metric(accuracy['recall'])}, "
            f"AUC {_metric(accuracy['auc'])}"
        )
    if result.report_path is not None:
        moved = ", ".join(result.report_drifted) or "no column"
        lines.append(f"  drift report  {result.report_path} (moved: {moved})")
    return lines


def _serving_json(report: ServingReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "url": report.url,
        "model": report.model,
        "batch_agrees": report.batch_agrees(),
        "requests": [
            {
                "rows": a.rows,
                "status": a.status,
                "latency_ms": a.latency_ms,
                "release": a.release,
                "predictions": a.predictions,
                "scores": a.scores,
                "error": a.error,
            }
            for a in report.answers
        ],
    }


def _serving_lines(report: ServingReport | None) -> list[str]:
    """The OIP answers of the HTTP server that ran beside the stream."""
    if report is None:
        return []
    lines = [f"  HTTP server   {report.url}/v2/models/{report.model}/infer, beside the stream:"]
    for answer in report.answers:
        if answer.status != 200:
            lines.append(
                f"                {answer.rows:>5,} row(s)  HTTP {answer.status} in "
                f"{answer.latency_ms:.1f} ms: {answer.error}"
            )
            continue
        if answer.rows == 1:
            what = f"{answer.predictions[0]} (score {answer.scores[0]:.3f})"
        else:
            flagged = sum(p == "fraud" for p in answer.predictions)
            agrees = "the same" if report.batch_agrees() else "NOT the same"
            what = f"{flagged:,} flagged as fraud, {agrees} scores for the rows asked alone"
        lines.append(
            f"                {answer.rows:>5,} row(s)  {what} by {answer.release} in "
            f"{answer.latency_ms:.1f} ms"
        )
    return lines


def _rollout_json(report: RolloutReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    trained = report.trained
    gate = report.gate
    return {
        "outcome": report.outcome,
        "champion": report.champion,
        "release": report.release,
        "digest": report.digest,
        "retrain_rows": list(report.retrain_rows),
        "retrain": None
        if trained is None
        else {
            "auc": trained.auc,
            "threshold": trained.threshold,
            "validation": trained.validation,
            "fitted_rows": trained.rows,
        },
        "gate": None
        if gate is None
        else {
            "passed": gate.passed,
            "rows": gate.rows,
            "frauds": gate.frauds,
            "metrics": gate.metrics,
            "reason": gate.reason(),
        },
        "phases": [
            {
                "strategy": phase.strategy,
                "rollout_id": phase.rollout_id,
                "steps": list(phase.steps),
                "state": phase.state,
                "reason": phase.reason,
                "ended_at_event": phase.ended_at_event,
                "pairs": phase.pairs,
                "disagreements": phase.disagreements,
                "arms": phase.arms,
                "verdicts": phase.verdicts,
            }
            for phase in report.phases
        ],
    }


def _rollout_lines(result: DemoResult) -> list[str]:
    """Retrain, gate, each rollout with its verdicts, the outcome, and which release
    scored the outputs."""
    report = result.rollout
    if report is None:
        return []
    lines: list[str] = []
    trained = report.trained
    if trained is not None:
        begin, end = report.retrain_rows
        lines.append(
            f"  retrain       {report.release} on the labelled events {begin:,}-{end - 1:,} "
            f"after the drift: held-out AUC {trained.auc:.3f}, fraud when P(fraud) >= "
            f"{trained.threshold:.3f}"
        )
    if report.gate is not None:
        lines.append(f"  gate          {report.gate.reason()}")
    for phase in report.phases:
        steps = ",".join(f"{w:g}" for w in phase.steps)
        lines.append(
            f"  {phase.strategy:<13} rollout {phase.rollout_id} (steps {steps}) "
            f"{phase.state} at event {phase.ended_at_event:,}: {phase.reason}"
        )
        if phase.strategy == "shadow" and phase.pairs:
            lines.append(
                f"                {phase.disagreements:,} of {phase.pairs:,} shadowed pairs "
                f"decided otherwise ({phase.disagreements / phase.pairs:.1%}), counted until "
                "the worker left the shadow"
            )
        for verdict in phase.verdicts:
            if verdict["decision"] not in ("next_step", "promote", "rollback"):
                continue  # collecting (counts only), or the demo's own end: said above
            baseline, candidate = verdict["events"]
            lines.append(
                f"                step {verdict['step'] + 1} ({verdict['weight']:g}%) "
                f"{verdict['decision']:<9} events per arm: baseline {baseline:,}, "
                f"candidate {candidate:,}"
            )
    outcome = report.outcome or "not reached"
    champion = f" (champion now {report.champion})" if report.champion else ""
    lines.append(f"  rollout       {outcome}{champion}")
    if result.outputs_by_release:
        counts = ", ".join(f"{ref} {n:,}" for ref, n in result.outputs_by_release.items())
        last, run = result.last_outputs
        lines.append(f"  outputs by    {counts}; the last {run:,} outputs by {last}")
    if len(result.accuracy_by_release) > 1:
        for ref, accuracy in result.accuracy_by_release.items():
            lines.append(
                f"  live accuracy {ref}: last {accuracy['window']:,} joined labels: accuracy "
                f"{_metric(accuracy['accuracy'])}, precision {_metric(accuracy['precision'])}, "
                f"recall {_metric(accuracy['recall'])}, AUC {_metric(accuracy['auc'])}"
            )
    return lines
