"""A stream worker's CPU per event, before and after a change, from alternating processes.

Usage::

    git worktree add --detach /tmp/b2-before 399bf21^
    git worktree add --detach /tmp/b2-after HEAD
    .venv/bin/python benchmarks/worker_cpu.py --before /tmp/b2-before --after /tmp/b2-after \\
        [--rounds 9] [--batches 60] [--no-canary]

Wall-clock throughput on a shared 2-core machine moves 2-3x with the load (see README.md,
"The stream (issue 11), before and after"); the CPU time of the scoring thread moves far
less, since another process's work is not charged to it. So each contender is one fresh
process per round, importing headrace from its own tree (``PYTHONPATH=TREE/src``, the same
interpreter), and the contenders alternate, their order rotating each round:

- **before** / **after**: a real `Worker` from `build_worker` (a spec dict, a temporary
  SQLite registry, the in-process memory broker, its default dedupe and dead letters) on
  ``fraud@champion``, the stream benchmark's scikit-learn ``LogisticRegression`` (20
  features, trained once by this parent so every child loads the same pickle);
- **after-canary** (after's tree only): the same, with release 2 (the same model again)
  in a 50% canary started through `plan_rollout` + `Registry.start_rollout` (min_samples
  so large that it never decides), picked up by one ``worker.follower.poll()`` before
  timing: the route stage splitting every batch between two releases (issue 12).

A child pre-fills the input topic, then per 512-event batch polls it (untimed) and times
`Worker.process` + `Worker.settle` in CPU time of the main thread (``time.thread_time_ns``);
its result is the median microseconds per event over its batches, after untimed warm-up
batches. The parent prints each child's median, the median over rounds per contender and
the ratios, overall and round by round (with a bootstrap interval of the median per-round
ratio). Nothing asserts; a child that imported the wrong
tree, lost an event or dead-lettered one fails loudly instead of reporting a number.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # streambench, when run as a file

from streambench.data import BATCH, FEATURES, encode, make_data

WARMUP_BATCHES = 10
NAME = "fraud"


def prepare(root: Path, *, events: int) -> None:
    """The model pickle, its schema, config, metrics and training data, and the events."""
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from sklearn.linear_model import LogisticRegression

    x, y, rows = make_data(events)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    joblib.dump(model, root / "model.pkl")
    (root / "schema.yaml").write_text(
        yaml.safe_dump({"fields": [{"name": n, "type": "float"} for n in FEATURES]})
    )
    (root / "config.yaml").write_text("threshold: 0.5\nlabels: [legit, fraud]\n")
    (root / "metrics.json").write_text(f'{{"train_accuracy": {float(model.score(x, y))}}}')
    columns = {n: x[:, i] for i, n in enumerate(FEATURES)}
    pq.write_table(pa.table({**columns, "label": y}), root / "train.parquet")
    np.save(root / "events.npy", rows)


# -- the child: one contender, one process -------------------------------------------------


def _register(registry: Any, root: Path, work: Path, *, alias: str | None) -> Any:
    from headrace.release.bundle import build_draft

    work.mkdir()
    draft = build_draft(
        root / "model.pkl",
        name=NAME,
        flavor="sklearn",
        workdir=work,
        schema_path=root / "schema.yaml",
        data_path=root / "train.parquet",
        metrics_path=root / "metrics.json",
        config_path=root / "config.yaml",
        code_version="bench",
    )
    # allow_duplicate: release 2 is the same model, on purpose (an A/A canary).
    return registry.register(draft, alias=alias, allow_duplicate=True, verification="passed")


def child(args: argparse.Namespace) -> None:
    """Build one worker, time its batches, print one JSON line."""
    import headrace
    from headrace.pipeline import build_worker, pipeline_spec_from_dict
    from headrace.registry import Registry
    from headrace.streams import OutRecord, broker

    root = Path(args.root)
    batches = args.batches + WARMUP_BATCHES
    rows = np.load(root / "events.npy")[: batches * BATCH]
    with tempfile.TemporaryDirectory(prefix="worker-cpu-") as scratch:
        home = Path(scratch)
        registry = Registry(
            f"sqlite:///{home / 'registry.db'}",
            artifacts=f"file://{home / 'artifacts'}",
            actor="bench@localhost",
            cache_dir=home / "cache",
        )
        try:
            _register(registry, root, home / "draft-1", alias="champion")
            memory = f"b2-{os.getpid()}"
            events = broker(memory)
            events.create_topic("in", partitions=4)
            spec = pipeline_spec_from_dict(
                {
                    "name": "bench",
                    "model": f"{NAME}@champion",
                    "source": {"url": f"memory://{memory}", "topic": "in"},
                    "outputs": [{"url": f"memory://{memory}", "topic": "out"}],
                    "dead_letter": {"url": f"memory://{memory}", "topic": "dead"},
                    "id_field": "id",
                }
            )
            worker = build_worker(spec, registry=registry, home=home)
            routed = "fraud:1"
            if args.canary:
                import msgspec

                from headrace.rollout.compat import plan_rollout

                _register(registry, root, home / "draft-2", alias=None)
                plan = plan_rollout(
                    registry, NAME, 2, strategy="canary", steps=[50.0], min_samples=10**9
                )
                registry.start_rollout(msgspec.structs.replace(plan, max_samples=10**9))
                follower = worker.follower
                if follower is None or not follower.poll():
                    raise RuntimeError("the worker's follower did not pick the rollout up")
                routed = follower.current.describe()
            records = [
                OutRecord(value=encode(i, row), key=str(i % 64).encode())
                for i, row in enumerate(rows.tolist())
            ]
            events.append("in", records)
            shadow = getattr(worker, "shadow_sink", None)
            for sink in [*worker.outputs, worker.dead_letter, *([shadow] if shadow else [])]:
                sink.open()
            worker.source.open()
            source = worker.source
            thread, process = time.thread_time_ns, time.process_time_ns
            per_event: list[float] = []
            cpu_started = 0
            gc.collect()
            for j in range(batches):
                batch = source.poll(max_messages=BATCH, timeout=1.0)
                if len(batch) != BATCH:
                    raise RuntimeError(f"batch {j}: polled {len(batch)} events, not {BATCH}")
                if j == WARMUP_BATCHES:
                    cpu_started = process()
                started = thread()
                worker.process(batch)
                worker.settle()
                if j >= WARMUP_BATCHES:
                    per_event.append((thread() - started) / 1000 / BATCH)
            process_us = (process() - cpu_started) / 1000 / (args.batches * BATCH)
            outputs = events.messages("out")
            dead = events.messages("dead") if "dead" in events.topics() else []
            if len(outputs) != batches * BATCH or dead:
                raise RuntimeError(f"{len(outputs)} outputs, {len(dead)} dead letters")
            by_release: dict[str, int] = {}
            for m in outputs:
                release = dict(m.headers).get("headrace-release", b"?").decode()
                by_release[release] = by_release.get(release, 0) + 1
        finally:
            registry.close()
    print(
        json.dumps(
            {
                "headrace": headrace.__file__,
                "routing": routed,
                "median_us": statistics.median(per_event),
                "min_us": min(per_event),
                "process_us": process_us,
                "outputs_by_release": by_release,
            }
        )
    )


# -- the parent: alternate the contenders --------------------------------------------------


def run_child(tree: Path, *, canary: bool, root: Path, batches: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "child", "--root", str(root), "--batches", str(batches)]
    done = subprocess.run(
        [*command, *(["--canary"] if canary else [])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child for {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    expected = (tree / "src" / "headrace" / "__init__.py").resolve()
    if Path(result["headrace"]).resolve() != expected:
        raise RuntimeError(f"child imported {result['headrace']}, not {expected}")
    return result


def paired_interval(ratios: list[float], *, seed: int = 11) -> tuple[float, float]:
    """A 95% bootstrap interval (over rounds) of the median per-round ratio: rounds are
    paired in time, so the load each round saw cancels out of its ratio."""
    rng = np.random.default_rng(seed)
    values = np.asarray(ratios)
    draws = rng.choice(values, size=(10_000, values.size), replace=True)
    low, high = np.quantile(np.median(draws, axis=1), [0.025, 0.975])
    return float(low), float(high)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def parent(args: argparse.Namespace) -> None:
    trees = {"before": Path(args.before), "after": Path(args.after)}
    contenders = [("before", False), ("after", False)]
    if not args.no_canary:
        contenders.append(("after", True))
    label = {c: f"{c[0]}{'-canary' if c[1] else ''}" for c in contenders}
    results: dict[str, list[dict[str, Any]]] = {label[c]: [] for c in contenders}
    with tempfile.TemporaryDirectory(prefix="worker-cpu-") as scratch:
        root = Path(scratch)
        prepare(root, events=(args.batches + WARMUP_BATCHES) * BATCH)
        print(f"load {_load()}; {args.batches} timed batches of {BATCH} events per process")
        for r in range(args.rounds):
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for contender in order:
                tree, canary = trees[contender[0]], contender[1]
                result = run_child(tree, canary=canary, root=root, batches=args.batches)
                results[label[contender]].append(result)
                print(
                    f"round {r + 1} {label[contender]:13} {result['median_us']:6.2f} us/event "
                    f"(thread, min {result['min_us']:.2f}; process {result['process_us']:.2f}) "
                    f"{result['routing']} {result['outputs_by_release']} load {_load()}",
                    flush=True,
                )
        print(f"load {_load()}")
    for name, runs in results.items():
        print(f"headrace imported from {runs[0]['headrace']} ({name})")
    print("| contender | us/event, median of rounds (min-max) | process CPU us/event |")
    print("|---|---:|---:|")
    medians = {}
    for name, runs in results.items():
        values = [run["median_us"] for run in runs]
        medians[name] = statistics.median(values)
        process_median = statistics.median(run["process_us"] for run in runs)
        print(
            f"| {name} | **{medians[name]:.2f}** ({min(values):.2f}-{max(values):.2f}) "
            f"| {process_median:.2f} |"
        )

    def ratio(a: str, b: str) -> None:
        pairs = [
            x["median_us"] / y["median_us"] for x, y in zip(results[a], results[b], strict=True)
        ]
        low, high = paired_interval(pairs)
        print(
            f"{a} / {b}: {medians[a] / medians[b]:.3f} by medians; per round "
            + ", ".join(f"{p:.3f}" for p in pairs)
            + f" (median {statistics.median(pairs):.3f}, 95% bootstrap {low:.3f}-{high:.3f})"
        )

    ratio("after", "before")
    if "after-canary" in results:
        ratio("after-canary", "after")
        # Throughput with a canary over throughput without is the inverse of the CPU ratio.
        print(f"canary throughput / none: {medians['after'] / medians['after-canary']:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    inner = sub.add_parser("child")
    inner.add_argument("--root", required=True)
    inner.add_argument("--batches", type=int, required=True)
    inner.add_argument("--canary", action="store_true")
    parser.add_argument("--before", help="the before tree (a git worktree)")
    parser.add_argument("--after", help="the after tree (a git worktree)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--no-canary", action="store_true")
    args = parser.parse_args()
    if args.command == "child":
        child(args)
        return
    if not args.before or not args.after:
        parser.error("give --before TREE and --after TREE (git worktrees of the two commits)")
    parent(args)


if __name__ == "__main__":
    main()
