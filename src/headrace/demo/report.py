"""The rollout's part of the demo's HTML report: the gate, each rollout's verdicts, and a
plot of the events each arm saw at each verdict.

The report file is the drift report (`headrace.monitoring.drift.render_html`); the demo
adds one section before its footer, so a reader finds the drift and what was done about
it in one page.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from headrace.demo.rollout import Phase, RolloutReport

__all__ = ["add_rollout_section", "rollout_section"]

_BASELINE, _CANDIDATE = "#3e7cb1", "#e8743b"


def add_rollout_section(path: Path, report: RolloutReport) -> None:
    """Insert `rollout_section(report)` into the HTML report at `path`, before its footer
    (at the end of its body when it has none)."""
    page = path.read_text(encoding="utf-8")
    section = rollout_section(report)
    for marker in ("<footer", "</main>", "</body>"):
        at = page.find(marker)
        if at >= 0:
            page = page[:at] + section + page[at:]
            break
    else:
        page += section
    path.write_text(page, encoding="utf-8")


def rollout_section(report: RolloutReport) -> str:
    """The rollout as an HTML section: outcome, gate, and per rollout its verdicts table
    and a plot of events per arm at each verdict."""
    parts = [
        '<section id="rollout">',
        f"<h2>Retrain and rollout of {escape(report.release or 'release 2')}</h2>",
        f"<p><b>Outcome:</b> {escape(report.outcome)}"
        + (f" (champion: {escape(report.champion)})" if report.champion else "")
        + "</p>",
    ]
    if report.gate is not None:
        parts.append(f"<p><b>Validation gate</b> {escape(report.gate.reason())}</p>")
    for phase in report.phases:
        parts += _phase(phase)
    parts.append("</section>")
    return "\n".join(parts)


def _phase(phase: Phase) -> list[str]:
    steps = ", ".join(f"{w:g}%" for w in phase.steps)
    lines = [
        f"<h3>{escape(phase.strategy.capitalize())} rollout {phase.rollout_id} "
        f"(steps {escape(steps)}): {escape(phase.state)}</h3>",
        f"<p>{escape(phase.reason)}</p>",
    ]
    if phase.strategy == "shadow" and phase.pairs:
        lines.append(
            f"<p>Shadowed pairs: {phase.pairs:,}, predictions differing: "
            f"{phase.disagreements:,} ({phase.disagreements / phase.pairs:.1%}).</p>"
        )
    rows = [
        "<tr>"
        f"<td>{v['step'] + 1} ({v['weight']:g}%)</td><td>{escape(v['decision'])}</td>"
        f"<td>{v['events'][0]:,}</td><td>{v['events'][1]:,}</td>"
        f"<td>{escape(v['reason'])}</td></tr>"
        for v in phase.verdicts
    ]
    if rows:
        lines += [
            '<table style="border-collapse:collapse;font-size:13px" border="1" cellpadding="4">',
            "<tr><th>step</th><th>decision</th><th>baseline events</th>"
            "<th>candidate events</th><th>reason</th></tr>",
            *rows,
            "</table>",
            _plot(phase.verdicts),
        ]
    else:
        lines.append("<p>No verdict was stored.</p>")
    return lines


def _plot(verdicts: list[dict[str, Any]]) -> str:
    """Bars of events per arm at each verdict (baseline blue, candidate orange)."""
    width, height, pad = 560, 160, 24
    top = max((max(v["events"]) for v in verdicts), default=0) or 1
    slot = (width - 2 * pad) / max(len(verdicts), 1)
    bar = max(min(slot / 2 - 2, 40.0), 1.0)
    shapes = []
    for k, verdict in enumerate(verdicts):
        x = pad + k * slot
        for j, (count, colour) in enumerate(
            zip(verdict["events"], (_BASELINE, _CANDIDATE), strict=True)
        ):
            h = (height - 2 * pad) * count / top
            shapes.append(
                f'<rect x="{x + j * (bar + 2):.1f}" y="{height - pad - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{colour}"/>'
            )
        shapes.append(
            f'<text x="{x + bar:.1f}" y="{height - 8}" font-size="10" text-anchor="middle" '
            f'fill="#52606d">{escape(verdict["decision"])}</text>'
        )
    legend = (
        f'<text x="{pad}" y="14" font-size="11" fill="{_BASELINE}">baseline events</text>'
        f'<text x="{pad + 110}" y="14" font-size="11" fill="{_CANDIDATE}">candidate events'
        f"</text>"
        f'<text x="{width - pad}" y="14" font-size="11" text-anchor="end" fill="#52606d">'
        f"max {top:,}</text>"
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" '
        f'aria-label="events per arm at each verdict">{legend}{"".join(shapes)}</svg>'
    )
