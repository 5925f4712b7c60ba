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

Contenders, each in its own process, timed per window and interleaved window by window
(all of them on the same window, in a fresh random order), so that the load of a shared
machine falls on all of them alike; median, min and max per check, after one untimed
warm-up call each:

* ``headrace``: `check_drift` with its defaults (Bonferroni at alpha 0.05, KS p-values
  ``auto``, which is asymptotic at this size, PSI included) on a `DriftReference` built
  once, as ``headrace drift check`` runs it; the same without PSI (the work alibi does);
  and the bare KS core (`ks_statistics` + `ks_pvalues`). P-values are remembered per
  (D, sizes), which a monitor's repeated checks hit; the first windows compute them;
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


# -- contenders: each returns check(window index) -> JSON-able result ---------------------


def headrace_checks(directory: Path, count: int) -> dict[str, Any]:
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
    sorted_ref = SortedColumns(list(ref.T))
    windows = _windows(directory, count)

    def check(i: int) -> list[float]:
        window = windows[i]
        report = check_drift(reference, {n: window[:, j] for j, n in enumerate(names)})
        return [c.p_value for c in report.columns]

    def like_for_like(i: int) -> None:  # what alibi does: KS, p-values, Bonferroni
        window = windows[i]
        check_drift(reference, {n: window[:, j] for j, n in enumerate(names)}, psi=False)

    def core(i: int) -> None:
        d, counts, _ = ks_statistics(sorted_ref, windows[i])
        ks_pvalues(d, sorted_ref.sizes, counts, method="asymp")

    return {"check": check, "kspsi": like_for_like, "core": core, "build_ms": build_ms}


def alibi_check(directory: Path, count: int) -> Any:
    import alibi_detect
    from alibi_detect.cd import KSDrift

    detector = KSDrift(np.load(directory / "reference.npy"), p_val=ALPHA)
    windows = _windows(directory, count)

    def check(i: int) -> Any:
        out = detector.predict(windows[i], return_p_val=True)["data"]
        return {
            "p_values": [float(p) for p in out["p_val"]],
            "threshold": float(out["threshold"]),
            "version": alibi_detect.__version__,
        }

    return check


def evidently_check(directory: Path, count: int, *, ks: bool) -> Any:
    import evidently
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    names = [f"c{j:02d}" for j in range(COLUMNS)]
    ref = pd.DataFrame(np.load(directory / "reference.npy"), columns=names)
    windows = _windows(directory, count)

    def check(i: int) -> Any:
        preset = DataDriftPreset(num_method="ks") if ks else DataDriftPreset()
        snapshot = Report([preset]).run(
            current_data=pd.DataFrame(windows[i], columns=names), reference_data=ref
        )
        verdicts, method = [], ""
        for metric in snapshot.dict()["metrics"]:
            config = metric["config"]
            if config.get("type", "").endswith("ValueDrift"):
                method = str(config["method"])
                value, threshold = float(metric["value"]), float(config["threshold"])
                # KS reports a p-value (drift below the threshold); the default at this
                # reference size, a normed Wasserstein distance (drift at or above it).
                verdicts.append(value < threshold if ks else value >= threshold)
        return {"verdicts": verdicts, "method": method, "version": evidently.__version__}

    return check


def serve_peer(name: str, directory: Path, count: int) -> None:
    """Inside a peer's venv (no headrace here): time one window per line of stdin."""
    if name == "alibi":
        check = alibi_check(directory, count)
    else:
        check = evidently_check(directory, count, ks=name == "evidently-ks")
    check(0)  # warm-up: imports, caches
    print("ready", flush=True)
    for line in sys.stdin:
        i = int(line)
        start = time.perf_counter()
        result = check(i)
        ms = (time.perf_counter() - start) * 1e3
        print(json.dumps({"ms": ms, "result": result}), flush=True)


class Peer:
    """A peer process that times the windows it is asked for."""

    def __init__(self, python: str, name: str, directory: Path, count: int) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [python, __file__, "--peer", name, "--data", str(directory), "--windows", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{name} did not start (see its stderr above)")
        self.times: list[float] = []
        self.results: list[Any] = []

    def run(self, i: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        self.times.append(answer["ms"])
        self.results.append(answer["result"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


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


def _timed(function: Any, i: int) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function(i)
    return (time.perf_counter() - start) * 1e3, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alibi-python")
    parser.add_argument("--evidently-python")
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--evidently-windows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        serve_peer(args.peer, Path(args.data), args.windows)
        return

    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        directory = Path(tmp)
        drift = make_data(directory, windows=args.windows, seed=args.seed)["drift"]
        ours = headrace_checks(directory, args.windows)
        ours["check"](0), ours["kspsi"](0), ours["core"](0)  # warm-up
        peers: list[Peer] = []
        if args.alibi_python:
            peers.append(Peer(args.alibi_python, "alibi", directory, args.windows))
        if args.evidently_python:
            for name in ("evidently", "evidently-ks"):
                peers.append(Peer(args.evidently_python, name, directory, args.windows))
        times: dict[str, list[float]] = {"check": [], "kspsi": [], "core": []}
        p_values = []
        # A fresh random order per window: no contender is systematically the first on a
        # window (it computes the p-values the others then find remembered) or the one
        # right after a peer (whose run evicted the caches).
        order_rng = np.random.default_rng(args.seed)
        contenders: list[str | int] = ["check", "kspsi", "core", *range(len(peers))]
        for i in range(args.windows):
            for pick in order_rng.permutation(len(contenders)):
                who = contenders[int(pick)]
                if isinstance(who, str):
                    ms, result = _timed(ours[who], i)
                    times[who].append(ms)
                    if who == "check":
                        p_values.append(result)
                elif not peers[who].name.startswith("evidently") or i < args.evidently_windows:
                    peers[who].run(i)
        for peer in peers:
            peer.close()
        report(args, ours["build_ms"], times, np.array(p_values), peers, drift)


def report(
    args: argparse.Namespace,
    build_ms: float,
    times: dict[str, list[float]],
    p: np.ndarray,
    peers: list[Peer],
    drift: list[list[bool]],
) -> None:
    bonferroni = (np.minimum(p * COLUMNS, 1.0) <= ALPHA).tolist()
    uncorrected = (p <= ALPHA).tolist()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {args.windows} windows")
    print(f"reference build (sort 20 columns, bins): {build_ms:.1f} ms, once")
    print(
        "\n| contender | ms per check, median (min to max) | median vs headrace | min vs headrace |"
    )
    print("|---|---:|---:|---:|")
    base, base_min = statistics.median(times["check"]), min(times["check"])

    def line(label: str, series: list[float]) -> None:
        print(
            f"| {label} | {_summary(series)} | {statistics.median(series) / base:.1f}x | "
            f"{min(series) / base_min:.1f}x |"
        )

    line("headrace check_drift (defaults: KS, Bonferroni, PSI)", times["check"])
    line("headrace check_drift, psi=False (alibi's work)", times["kspsi"])
    line("headrace KS core (statistics + p-values)", times["core"])
    rows = []
    for peer in peers:
        if peer.name == "alibi":
            version = peer.results[0]["version"]
            line(f"alibi-detect {version} KSDrift", peer.times)
            alibi_p = np.array([r["p_values"] for r in peer.results])
            verdicts = (alibi_p < peer.results[0]["threshold"]).tolist()
            share, differ = _agreement(bonferroni, verdicts)
            rows.append(
                f"| headrace (Bonferroni) vs alibi KSDrift (Bonferroni) | {share:.2%} | {differ} "
                f"| max p-value gap {np.abs(alibi_p - p).max():.1e} (alibi keeps float32) |"
            )
            rows.append(
                f"| false-alarm rate, no-drift windows | headrace "
                f"{_false_alarm_rate(bonferroni, drift):.1%}, alibi "
                f"{_false_alarm_rate(verdicts, drift):.1%} | | target {ALPHA:.0%} |"
            )
        else:
            count = len(peer.results)
            method, version = peer.results[0]["method"], peer.results[0]["version"]
            line(f"Evidently {version} DataDriftPreset ({method})", peer.times)
            verdicts = [r["verdicts"] for r in peer.results]
            share, differ = _agreement(uncorrected[:count], verdicts)
            note = f"{count} windows" if peer.name == "evidently-ks" else "a different test"
            rows.append(
                f"| headrace (no correction) vs Evidently {method} | {share:.2%} | {differ} | "
                f"{note}; Evidently flags {_false_alarm_rate(verdicts, drift[:count]):.0%} of "
                "its no-drift windows |"
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
