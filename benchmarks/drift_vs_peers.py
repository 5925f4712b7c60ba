"""``headrace drift check``'s core against alibi-detect's KSDrift and Evidently's preset.

Usage (the peers live in their own venvs; see benchmarks/README.md)::

    .venv/bin/python benchmarks/drift_vs_peers.py \\
        --alibi-python /tmp/venv-alibi/bin/python \\
        --evidently-python /tmp/venv-evidently/bin/python \\
        [--windows 200] [--evidently-windows 40] [--seed 7]

One run, one data set, written once as .npy files that every contender reads:

* a 10,000 x 20 numeric reference (normal, log-normal, exponential, uniform, Student-t,
  and integer columns with ties);
* ``--windows`` windows of 1,000 rows, half with no drift and half with a few columns
  shifted by 0.03 to 0.3 of their spread (from clearly detectable to borderline, so
  that verdict agreement is tested where it is hard).

Contenders, each timed per window in its own process (median, min and max; the first
call is a warm-up and not counted):

* ``headrace``: `check_drift` with its defaults (Bonferroni at alpha 0.05, KS p-values
  ``auto``, which is asymptotic at this size, PSI included) on a `DriftReference` built
  once, as ``headrace drift check`` runs it; also the bare KS core (`ks_statistics` +
  `ks_pvalues`);
* ``alibi``: ``KSDrift(x_ref, p_val=0.05)`` (Bonferroni by default), ``predict``; a
  column drifted when its p-value is under alibi's threshold (0.05 / 20);
* ``evidently``: ``Report([DataDriftPreset()])`` on pandas frames: its default tests (at
  this reference size, normed Wasserstein distance >= 0.1), and with ``num_method="ks"``
  (scipy's KS, each column at p < 0.05, no correction), on ``--evidently-windows``
  windows (it is slow).

Agreement is per column and window: headrace (Bonferroni) vs alibi (Bonferroni);
headrace without correction vs Evidently's KS (both uncorrected); headrace vs Evidently's
default (different tests: shown, not expected to match). The false-alarm rate is the
share of no-drift windows in which anything was flagged (target: alpha = 5%).

Nothing asserts; the numbers go into benchmarks/README.md by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROWS_REF, ROWS_WINDOW, COLUMNS = 10_000, 1_000, 20
ALPHA = 0.05


def _column(rng: np.random.Generator, kind: int, rows: int, shift: float) -> np.ndarray:
    """One column of a family; `shift` is in units of the column's spread."""
    if kind == 0:
        return rng.normal(shift, 1.0, rows)
    if kind == 1:
        return rng.lognormal(shift, 0.8, rows)
    if kind == 2:
        return rng.exponential(1.0, rows) + shift
    if kind == 3:
        return rng.uniform(0.0, 1.0, rows) + shift * 0.29
    if kind == 4:
        return rng.standard_t(4, rows) + shift
    return np.floor(rng.normal(10 + 3 * shift, 3.0, rows))  # integers: ties on both sides


def make_data(directory: Path, *, windows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    kinds = [j % 6 for j in range(COLUMNS)]
    reference = np.column_stack([_column(rng, k, ROWS_REF, 0.0) for k in kinds])
    np.save(directory / "reference.npy", reference)
    truth = []
    for w in range(windows):
        shifts = np.zeros(COLUMNS)
        if w % 2 == 1:  # every other window drifts, on 1 to 5 columns
            moved = rng.choice(COLUMNS, size=int(rng.integers(1, 6)), replace=False)
            shifts[moved] = rng.uniform(0.03, 0.3, size=moved.size)
        window = np.column_stack(
            [_column(rng, k, ROWS_WINDOW, s) for k, s in zip(kinds, shifts, strict=True)]
        )
        np.save(directory / f"window-{w:04d}.npy", window)
        truth.append([bool(s) for s in shifts])
    return {"windows": windows, "drift": truth}


def _windows(directory: Path, count: int) -> list[np.ndarray]:
    return [np.load(directory / f"window-{w:04d}.npy") for w in range(count)]


def _timed(function: Any, windows: list[np.ndarray]) -> tuple[list[float], list[Any]]:
    function(windows[0])  # warm-up: imports, caches
    times, results = [], []
    for window in windows:
        start = time.perf_counter()
        results.append(function(window))
        times.append((time.perf_counter() - start) * 1e3)
    return times, results


# -- contenders -------------------------------------------------------------------------


def run_headrace(directory: Path, count: int) -> dict[str, Any]:
    from headrace.monitoring.drift import (
        DriftReference,
        SortedColumns,
        check_drift,
        ks_pvalues,
        ks_statistics,
    )

    ref = np.load(directory / "reference.npy")
    names = [f"c{j:02d}" for j in range(COLUMNS)]
    start = time.perf_counter()
    reference = DriftReference.build(numeric={n: ref[:, j] for j, n in enumerate(names)})
    build_ms = (time.perf_counter() - start) * 1e3
    windows = _windows(directory, count)

    def check(window: np.ndarray) -> list[float]:
        report = check_drift(reference, {n: window[:, j] for j, n in enumerate(names)})
        return [c.p_value for c in report.columns]

    times, p_values = _timed(check, windows)
    sorted_ref = SortedColumns(list(ref.T))

    def core(window: np.ndarray) -> Any:
        d, counts, _ = ks_statistics(sorted_ref, window)
        return ks_pvalues(d, sorted_ref.sizes, counts, method="asymp")

    core_times, _ = _timed(core, windows)
    return {
        "times": times,
        "core_times": core_times,
        "build_ms": build_ms,
        "p_values": p_values,
    }


def run_alibi(directory: Path, count: int) -> dict[str, Any]:
    from alibi_detect.cd import KSDrift

    ref = np.load(directory / "reference.npy")
    detector = KSDrift(ref, p_val=ALPHA)
    windows = _windows(directory, count)

    def check(window: np.ndarray) -> Any:
        out = detector.predict(window, return_p_val=True, return_distance=True)["data"]
        return [float(p) for p in out["p_val"]], float(out["threshold"])

    times, results = _timed(check, windows)
    import alibi_detect

    return {
        "times": times,
        "p_values": [r[0] for r in results],
        "threshold": results[0][1],
        "version": alibi_detect.__version__,
    }


def run_evidently(directory: Path, count: int) -> dict[str, Any]:
    import evidently
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    names = [f"c{j:02d}" for j in range(COLUMNS)]
    ref = pd.DataFrame(np.load(directory / "reference.npy"), columns=names)
    windows = _windows(directory, count)
    out: dict[str, Any] = {"version": evidently.__version__}
    # The default at this reference size is a distance (drift when >= threshold); KS
    # reports a p-value (drift when < threshold).
    for label, preset, is_p_value in (
        ("default", lambda: DataDriftPreset(), False),
        ("ks", lambda: DataDriftPreset(num_method="ks"), True),
    ):

        def check(window: np.ndarray, preset: Any = preset, p_value: bool = is_p_value) -> Any:
            snapshot = Report([preset()]).run(
                current_data=pd.DataFrame(window, columns=names), reference_data=ref
            )
            verdicts, method = [], ""
            for metric in snapshot.dict()["metrics"]:
                config = metric["config"]
                if config.get("type", "").endswith("ValueDrift"):
                    method = str(config["method"])
                    value, threshold = float(metric["value"]), float(config["threshold"])
                    verdicts.append(value < threshold if p_value else value >= threshold)
            return verdicts, method

        times, results = _timed(check, windows)
        out[label] = {
            "times": times,
            "verdicts": [r[0] for r in results],
            "method": results[0][1],
        }
    return out


# -- the parent ---------------------------------------------------------------------------


def false_alarms_fresh_references(*, references: int, windows: int, seed: int) -> float:
    """Share of no-drift windows flagged, each reference drawn anew: the rate alpha
    promises is over references too (one fixed reference sits above or below it)."""
    from headrace.monitoring.drift import DriftReference, check_drift

    rng = np.random.default_rng([seed, 1])
    kinds = [j % 6 for j in range(COLUMNS)]
    names = [f"c{j:02d}" for j in range(COLUMNS)]
    flagged = 0
    for _ in range(references):
        ref = np.column_stack([_column(rng, k, ROWS_REF, 0.0) for k in kinds])
        reference = DriftReference.build(numeric={n: ref[:, j] for j, n in enumerate(names)})
        for _ in range(windows):
            window = {
                n: _column(rng, k, ROWS_WINDOW, 0.0) for n, k in zip(names, kinds, strict=True)
            }
            flagged += bool(check_drift(reference, window, psi=False).drifted_columns)
    return flagged / (references * windows)


def _summary(times: list[float]) -> str:
    return f"{statistics.median(times):,.2f} ({min(times):,.2f} to {max(times):,.2f})"


def _agreement(a: list[list[bool]], b: list[list[bool]]) -> tuple[float, int]:
    flat_a, flat_b = np.array(a).ravel(), np.array(b).ravel()
    return float(np.mean(flat_a == flat_b)), int(np.sum(flat_a != flat_b))


def _false_alarm_rate(verdicts: list[list[bool]], drift: list[list[bool]]) -> float:
    null = [any(v) for v, truth in zip(verdicts, drift, strict=True) if not any(truth)]
    return float(np.mean(null)) if null else float("nan")


def _peer(python: str, name: str, directory: Path, count: int) -> dict[str, Any]:
    result = subprocess.run(
        [python, __file__, "--peer", name, "--data", str(directory), "--windows", str(count)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alibi-python")
    parser.add_argument("--evidently-python")
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--evidently-windows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--peer", choices=["alibi", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:  # inside a peer's venv: no headrace here
        runner = run_alibi if args.peer == "alibi" else run_evidently
        print(json.dumps(runner(Path(args.data), args.windows)))
        return

    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        directory = Path(tmp)
        meta = make_data(directory, windows=args.windows, seed=args.seed)
        drift = meta["drift"]
        ours = run_headrace(directory, args.windows)
        p = np.array(ours["p_values"])
        bonferroni = (np.minimum(p * COLUMNS, 1.0) <= ALPHA).tolist()
        uncorrected = (p <= ALPHA).tolist()
        print(f"python {platform.python_version()}, numpy {np.__version__}, {args.windows} windows")
        print(f"reference build (sort 20 columns, bins): {ours['build_ms']:.1f} ms, once")
        print("\n| contender | ms per check, median (min to max) | vs headrace |")
        print("|---|---:|---:|")
        base = statistics.median(ours["times"])
        print(f"| headrace check_drift | {_summary(ours['times'])} | 1.0x |")
        print(
            f"| headrace KS core (statistics + p-values) | {_summary(ours['core_times'])} | "
            f"{statistics.median(ours['core_times']) / base:.2f}x |"
        )
        rows = []
        if args.alibi_python:
            alibi = _peer(args.alibi_python, "alibi", directory, args.windows)
            alibi_verdicts = (np.array(alibi["p_values"]) < alibi["threshold"]).tolist()
            print(
                f"| alibi-detect {alibi['version']} KSDrift | {_summary(alibi['times'])} | "
                f"{statistics.median(alibi['times']) / base:.1f}x |"
            )
            share, differ = _agreement(bonferroni, alibi_verdicts)
            gap = np.abs(np.array(alibi["p_values"]) - p)
            rows.append(
                f"| headrace (Bonferroni) vs alibi KSDrift (Bonferroni) | {share:.2%} | {differ} "
                f"| max p-value gap {gap.max():.1e} (alibi keeps float32) |"
            )
            rows.append(
                f"| false-alarm rate, no-drift windows | headrace "
                f"{_false_alarm_rate(bonferroni, drift):.1%}, alibi "
                f"{_false_alarm_rate(alibi_verdicts, drift):.1%} | | target {ALPHA:.0%} |"
            )
        if args.evidently_python:
            count = min(args.evidently_windows, args.windows)
            ev = _peer(args.evidently_python, "evidently", directory, count)
            for label in ("default", "ks"):
                print(
                    f"| Evidently {ev['version']} DataDriftPreset ({ev[label]['method']}) | "
                    f"{_summary(ev[label]['times'])} | "
                    f"{statistics.median(ev[label]['times']) / base:.0f}x |"
                )
            share, differ = _agreement(uncorrected[:count], ev["ks"]["verdicts"])
            rows.append(
                f"| headrace (no correction) vs Evidently KS (p < 0.05) | {share:.2%} | "
                f"{differ} | {count} windows |"
            )
            share, differ = _agreement(uncorrected[:count], ev["default"]["verdicts"])
            rows.append(
                f"| headrace (no correction) vs Evidently default "
                f"({ev['default']['method']}) | {share:.2%} | {differ} | different test |"
            )
            rows.append(
                f"| false-alarm rate, no-drift windows, Evidently | default "
                f"{_false_alarm_rate(ev['default']['verdicts'], drift[:count]):.1%}, KS "
                f"{_false_alarm_rate(ev['ks']['verdicts'], drift[:count]):.1%} | | "
                "per column at 5%, no correction |"
            )
        truth = np.array(drift)
        caught = np.array(bonferroni)[truth].mean() if truth.any() else float("nan")
        print("\n| verdicts | agreement | columns differing | note |")
        print("|---|---:|---:|---|")
        for row in rows:
            print(row)
        print(f"\nheadrace (Bonferroni) flags {caught:.1%} of the shifted columns (0.03-0.3 sd).")
        rate = false_alarms_fresh_references(references=20, windows=50, seed=args.seed)
        print(f"headrace false-alarm rate, 1,000 no-drift windows, 20 fresh references: {rate:.1%}")


if __name__ == "__main__":
    sys.exit(main())
