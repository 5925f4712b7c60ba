"""The drift report as one self-contained HTML file: a verdict first, then a plot a column.

Plots are inline SVG drawn here (no JavaScript, no CDN, no image files), so the report
opens offline, attaches to a ticket and renders the same in any browser. Columns are
ordered by evidence: drifted ones first, then by p-value, so the page reads top-down
from "what moved" to "what did not".

What a reader needs to see a shift: a skewed positive column (amounts, durations) is
drawn on a log axis, where a x1.5 change is a visible step rather than a sliver at the
left edge; booleans are bars of false/true (and tested by chi-square, see
`headrace.monitoring.drift.check`); axes carry round ticks; every p-value has one format
(`format_p`); the evidence chart lists the columns with some evidence, not the ones at
p = 1.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from headrace.monitoring.drift.check import ColumnDrift, DriftReport
from headrace.monitoring.drift.reference import DriftReference, _as_float

__all__ = ["format_p", "render_html"]

REFERENCE_COLOR = "#5b7fa6"
CURRENT_COLOR = "#e8743b"
DRIFT_COLOR = "#c0392b"
OK_COLOR = "#2e8b57"
HIST_BINS = 30
DISCRETE_VALUES = 30
"""Numeric columns with at most this many distinct values get a bar per value."""
TOP_CATEGORIES = 12
WIDTH, HEIGHT = 420, 170
SKEW_RATIO = 3.0
"""How much longer a positive column's upper tail must be than its lower one for a log
axis (see `_is_skewed`); a symmetric column has 1."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1f2933}
header{padding:24px 32px;color:#fff}
header h1{margin:0 0 6px;font-size:26px} header p{margin:0;opacity:.92}
main{padding:20px 32px}
.meta{display:flex;gap:28px;flex-wrap:wrap;margin:0 0 18px}
.meta div{background:#fff;border-radius:8px;padding:10px 16px;box-shadow:0 1px 2px #0001}
.meta b{display:block;font-size:20px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(450px,1fr));gap:16px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px #0002;
border-top:4px solid #ccd}
.card.drift{border-top-color:#c0392b} .card.ok{border-top-color:#2e8b57}
.card h3{margin:0 0 2px;font-size:16px} .card .facts{font-size:12.5px;color:#52606d}
.badge{float:right;font-size:12px;font-weight:600;padding:2px 8px;border-radius:10px;color:#fff}
.legend{font-size:12.5px;margin:4px 0 14px}
.legend span{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px 0 12px;
vertical-align:-1px}
section{margin-bottom:24px} h2{font-size:18px;margin:8px 0 10px}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:left}
"""


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def format_p(value: float) -> str:
    """A p-value, the same way everywhere in the report: 3 significant digits (``0.0123``,
    ``7.3e-14``, ``1``), ``< 1e-300`` where a double cannot tell it from 0."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value < 1e-300:
        return "< 1e-300"
    return f"{value:.3g}"


def _tick_text(value: float) -> str:
    """A tick label: thousands separated, no trailing zeros."""
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.0e}".replace("e+0", "e").replace("e-0", "e-")
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _nice_ticks(low: float, high: float, *, most: int = 6) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) inside [low, high]."""
    span = high - low
    if not span > 0:
        return [low]
    raw = span / (most - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    count = int(math.floor((high - first) / step + 1e-9)) + 1
    return [round(first + i * step, 12) for i in range(max(count, 0))]


def _log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten inside [low, high], with 2x and 5x when they span few decades."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    mults = (1, 2, 5) if hi - lo <= 3 else (1,)
    ticks = [m * 10.0**e for e in range(lo, hi + 1) for m in mults]
    return [t for t in ticks if low <= t <= high]


def _is_skewed(values: npt.NDArray[np.float64]) -> bool:
    """A positive column whose upper tail (median to 99th percentile) is `SKEW_RATIO`
    times longer than its lower one (1st percentile to median): lognormal amounts,
    exponential distances. Zero or negative values keep the linear axis."""
    if values.size < 10 or float(values.min()) <= 0.0:
        return False
    low, median, high = np.quantile(values, [0.01, 0.5, 0.99])
    return bool(high - median >= SKEW_RATIO * (median - low))


def _svg(body: str, *, width: int = WIDTH, height: int = HEIGHT, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}" '
        f'style="max-width:{width * 1.6:.0f}px" role="img" aria-label="{html.escape(label)}">'
        f"{body}</svg>"
    )


def _numeric_plot(column: str, reference: npt.NDArray[np.float64], current: Any) -> str:
    """Overlaid density histograms on shared bins over the 0.5%-99.5% range of both."""
    cur = _as_float(np.asarray(current))
    cur = cur[~np.isnan(cur)]
    ref = reference[~np.isnan(reference)]
    if ref.size == 0 or cur.size == 0:
        return _svg('<text x="10" y="20">no values</text>', label=f"{column}: no values")
    both = np.concatenate([ref, cur])
    distinct = np.unique(both)
    if distinct.size <= DISCRETE_VALUES:  # counts, flags, hours: a bar per value
        values, counts = np.unique(ref, return_counts=True)
        table = {
            _fmt(float(v), 2).rstrip("0").rstrip("."): int(c)
            for v, c in zip(values, counts, strict=True)
        }
        names = [_fmt(float(v), 2).rstrip("0").rstrip(".") for v in cur]
        return _categorical_plot(
            column,
            table,
            np.array(names, dtype=object),
            keep_order=[_fmt(float(v), 2).rstrip("0").rstrip(".") for v in distinct],
        )
    log = _is_skewed(ref)
    positive = both[both > 0] if log else both
    low, high = (float(q) for q in np.quantile(positive, [0.005, 0.995]))
    if not high > low:
        low, high = float(both.min()) - 0.5, float(both.max()) + 0.5
        log = False
    edges = np.geomspace(low, high, HIST_BINS + 1) if log else np.linspace(low, high, HIST_BINS + 1)
    ref_h = np.histogram(np.clip(ref, low, high), edges)[0] / ref.size
    cur_h = np.histogram(np.clip(cur, low, high), edges)[0] / cur.size
    top = max(float(ref_h.max()), float(cur_h.max()), 1e-12)
    left, right, base, roof = 40, WIDTH - 10, HEIGHT - 28, 10
    scale_x = (right - left) / HIST_BINS
    parts = [
        f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#9aa5b1"/>',
    ]
    for i, share in enumerate(ref_h):
        h = (base - roof) * share / top
        parts.append(
            f'<rect class="ref" x="{left + i * scale_x:.1f}" y="{base - h:.1f}" '
            f'width="{scale_x - 1:.1f}" height="{h:.1f}" fill="{REFERENCE_COLOR}" '
            'fill-opacity="0.55"/>'
        )
    points = []
    for i, share in enumerate(cur_h):
        y = base - (base - roof) * share / top
        points.append(f"{left + i * scale_x:.1f},{y:.1f} {left + (i + 1) * scale_x:.1f},{y:.1f}")
    parts.append(
        f'<polyline class="cur" points="{" ".join(points)}" fill="none" '
        f'stroke="{CURRENT_COLOR}" stroke-width="2.2"/>'
    )
    if log:
        ticks = _log_ticks(low, high)
        where = [
            (math.log10(t) - math.log10(low)) / (math.log10(high) - math.log10(low)) for t in ticks
        ]
    else:
        ticks = _nice_ticks(low, high)
        where = [(t - low) / (high - low) for t in ticks]
    for value, at in zip(ticks, where, strict=True):
        x = left + at * (right - left)
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#9aa5b1"/>'
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 10}" font-size="11" '
            f'text-anchor="middle" fill="#52606d">{html.escape(_tick_text(value))}</text>'
        )
    if log:
        parts.append(
            f'<text x="{right}" y="{roof + 8}" font-size="10" text-anchor="end" '
            'fill="#52606d">log scale</text>'
        )
    parts.append(f'<text x="4" y="{roof + 8}" font-size="10" fill="#52606d">{top:.0%}</text>')
    scale = "log" if log else "linear"
    return _svg("".join(parts), label=f"{column}: reference vs current distribution ({scale} axis)")


def _boolean_plot(column: str, reference: npt.NDArray[np.float64], current: Any) -> str:
    """Bars of the false and true shares, as for a category."""
    ones = int(reference.size - np.searchsorted(reference, 0.5))
    table = {"false": reference.size - ones, "true": ones}
    cur = _as_float(np.asarray(current))
    cur = cur[~np.isnan(cur)]
    names = np.where(cur != 0, "true", "false").astype(object)
    return _categorical_plot(column, table, names, keep_order=["false", "true"])


def _categorical_plot(
    column: str,
    reference: Mapping[str, int],
    current: Any,
    *,
    keep_order: Sequence[str] | None = None,
) -> str:
    """Side-by-side bars of each category's share, the most common first (or, for the
    values of a discrete numeric column, in `keep_order`)."""
    values = [str(v) for v in np.asarray(current, dtype=object).tolist() if v is not None]
    cur_counts: dict[str, int] = {}
    for value in values:
        cur_counts[value] = cur_counts.get(value, 0) + 1
    ref_total = max(sum(reference.values()), 1)
    cur_total = max(len(values), 1)
    names = (
        list(keep_order)
        if keep_order is not None
        else sorted(
            set(reference) | set(cur_counts),
            key=lambda n: -(reference.get(n, 0) / ref_total + cur_counts.get(n, 0) / cur_total),
        )[:TOP_CATEGORIES]
    )
    if not names:
        return _svg('<text x="10" y="20">no values</text>', label=f"{column}: no values")
    ref_share = [reference.get(n, 0) / ref_total for n in names]
    cur_share = [cur_counts.get(n, 0) / cur_total for n in names]
    top = max(max(ref_share), max(cur_share), 1e-12)
    left, right, base, roof = 10, WIDTH - 10, HEIGHT - 34, 10
    slot = (right - left) / len(names)
    bar = max(slot * 0.38, 1.0)
    parts = [f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#9aa5b1"/>']
    for i, name in enumerate(names):
        x = left + i * slot + slot * 0.1
        for k, (share, color, css) in enumerate(
            ((ref_share[i], REFERENCE_COLOR, "ref"), (cur_share[i], CURRENT_COLOR, "cur"))
        ):
            h = (base - roof) * share / top
            parts.append(
                f'<rect class="{css}" x="{x + k * bar:.1f}" y="{base - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{color}"/>'
            )
        label = name if len(name) <= 10 else name[:9] + "…"
        if len(names) > TOP_CATEGORIES and i % math.ceil(len(names) / TOP_CATEGORIES):
            continue  # many narrow bars: label every few
        parts.append(
            f'<text x="{x + bar:.1f}" y="{base + 13}" font-size="10" text-anchor="middle" '
            f'fill="#52606d">{html.escape(label)}</text>'
        )
    return _svg("".join(parts), label=f"{column}: category shares, reference vs current")


def _evidence_chart(columns: Sequence[ColumnDrift], alpha: float) -> str:
    """One bar per column with some evidence: -log10 of its corrected p-value, the alarm
    line at alpha. Columns at a corrected p of 1 (no evidence, the usual case after the
    correction) are counted in a note rather than drawn as empty rows."""
    evident = [c for c in columns if not (c.adjusted_p_value >= 0.9995) or c.drifted]
    hidden = len(columns) - len(evident)
    shown = evident[:40]
    note = (
        f"<p>{hidden} more column{'s' if hidden != 1 else ''} at corrected p = 1 (no "
        "evidence of drift), not drawn.</p>"
        if hidden
        else ""
    )
    if not shown:
        return note
    width = 900
    row = 18
    height = row * len(shown) + 30
    label_w = 170
    cap = 12.0
    line = -math.log10(alpha)
    top = max(
        [min(-math.log10(max(c.adjusted_p_value, 1e-300)), cap) for c in shown if
         math.isfinite(c.adjusted_p_value)] + [line * 1.5]
    )  # fmt: skip
    scale = (width - label_w - 100) / top
    parts = []
    for i, c in enumerate(shown):
        y = 10 + i * row
        value = (
            min(-math.log10(max(c.adjusted_p_value, 1e-300)), cap)
            if math.isfinite(c.adjusted_p_value)
            else 0.0
        )
        color = DRIFT_COLOR if c.drifted else OK_COLOR
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" font-size="12" text-anchor="end">'
            f"{html.escape(c.column)}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{max(value * scale, 1):.1f}" '
            f'height="{row - 5}" fill="{color}"/>'
            f'<text x="{label_w + value * scale + 6:.1f}" y="{y + 12}" font-size="11" '
            f'fill="#52606d">p = {format_p(c.adjusted_p_value)}</text>'
        )
    x = label_w + line * scale
    parts.append(
        f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 18}" stroke="#1f2933" '
        'stroke-dasharray="4 3"/>'
        f'<text x="{x + 4:.1f}" y="{height - 4}" font-size="11">alpha = {alpha}</text>'
    )
    return (
        _svg(
            "".join(parts),
            width=width,
            height=height,
            label="evidence of drift per column (-log10 corrected p-value)",
        )
        + note
    )


def render_html(
    report: DriftReport,
    reference: DriftReference,
    current: Mapping[str, npt.ArrayLike],
    *,
    title: str = "Drift report",
    current_name: str = "current",
) -> str:
    """The whole report page as a string (write it with ``Path.write_text``)."""
    ordered = sorted(
        report.columns,
        key=lambda c: (not c.drifted, c.p_value if math.isfinite(c.p_value) else 2.0),
    )
    drifted = [c for c in ordered if c.drifted]
    verdict = (
        f"Drift in {len(drifted)} of {len(ordered)} columns"
        if drifted
        else f"No drift in {len(ordered)} columns"
    )
    detail = (
        "Moved: "
        + ", ".join(html.escape(c.column) for c in drifted[:8])
        + (" …" if len(drifted) > 8 else "")
        if drifted
        else "Every column is consistent with the reference at this level."
    )
    color = DRIFT_COLOR if report.drifted else OK_COLOR
    extras = []
    if report.prediction is not None:
        p = report.prediction
        extras.append(
            f"<div><b>{_fmt(p.js_distance)}</b>scores: Jensen-Shannon "
            f"({'drift' if p.drifted else 'ok'}, threshold {p.threshold})</div>"
        )
    if report.multivariate is not None:
        m = report.multivariate
        extras.append(
            f"<div><b>p = {format_p(m.p_value)}</b>all numeric columns together (MMD, "
            f"{m.permutations} permutations)</div>"
        )
    cards = []
    for c in ordered:
        if c.kind == "numeric":
            plot = _numeric_plot(c.column, reference.numeric_values(c.column), current[c.column])
            test = f"KS D = {_fmt(c.statistic)}"
        elif c.kind == "boolean":
            plot = _boolean_plot(c.column, reference.numeric_values(c.column), current[c.column])
            test = f"chi² = {_fmt(c.statistic, 1)} (false/true shares)"
        else:
            plot = _categorical_plot(
                c.column, reference.category_table(c.column), current[c.column]
            )
            test = f"chi² = {_fmt(c.statistic, 1)}"
        state = "drift" if c.drifted else "ok"
        cards.append(
            f'<div class="card {state}"><span class="badge" style="background:'
            f'{DRIFT_COLOR if c.drifted else OK_COLOR}">{state}</span>'
            f"<h3>{html.escape(c.column)}</h3>"
            f'<div class="facts">{test} · p = {format_p(c.p_value)} · corrected p = '
            f"{format_p(c.adjusted_p_value)} · PSI = {_fmt(c.psi)} · rows {c.reference_rows:,} vs "
            f"{c.current_rows:,}</div>{plot}</div>"
        )
    skipped = (
        f"<p>Not in the reference, not tested: {html.escape(', '.join(report.skipped))}</p>"
        if report.skipped
        else ""
    )
    correction = {"bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "none"}.get(
        report.correction, report.correction
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: {html.escape(verdict)}</title><style>{_CSS}</style></head>
<body><header style="background:{color}"><h1>{html.escape(verdict)}</h1><p>{detail}</p></header>
<main>
<div class="meta">
<div><b>{html.escape(report.reference)}</b>reference</div>
<div><b>{html.escape(current_name)}</b>{report.current_rows:,} rows</div>
<div><b>{report.alpha}</b>alpha, {correction} correction</div>
{"".join(extras)}
</div>
<section><h2>Evidence per column</h2>{_evidence_chart(ordered, report.alpha)}</section>
<section><h2>Distributions</h2>
<div class="legend"><span style="background:{REFERENCE_COLOR}"></span>reference
<span style="background:{CURRENT_COLOR}"></span>current</div>
<div class="grid">{"".join(cards)}</div>{skipped}</section>
<footer style="font-size:12px;color:#7b8794">headrace drift check · {stamp} ·
KS p-values: {html.escape(report.method)}</footer>
</main></body></html>
"""
