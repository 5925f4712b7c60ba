"""What a running canary costs a stream worker: `Worker.process` with a 50% canary vs none.

Usage::

    .venv/bin/python benchmarks/rollout_overhead.py [--batches 40] [--repeat 7]

In this process, without Kafka, like ``worker_metrics.py``: the benchmark's scikit-learn
``LogisticRegression`` (20 features) registered twice in a temporary SQLite registry (the
same model as ``bench-lr:1``, the champion, and ``bench-lr:2``, the candidate), 512-event
batches of its JSON events, sources and sinks that do nothing, no dedupe store. One
worker scores with the champion alone; the other follows ``bench-lr@champion`` with a
running canary of version 2 at 50% (started with `plan_rollout` and
`Registry.start_rollout` as ``headrace rollout start`` does, picked up by one
`ReleaseFollower.poll`), so every batch is routed by key, scored by two releases in
matched-size parts and its per-arm evidence handed to a `RolloutParticipant`. The
participant's flush and judge run every ``poll_s`` in a thread of their own in a worker;
here they are timed apart (one `RolloutParticipant.tick` and one `judge` call).

Pairs: each repeat runs the batches through both workers in turns (which goes first
alternates), timed in CPU time of the main thread (`time.thread_time`: other work on the
machine is not counted); printed are the medians over the repeats of microseconds per
event and events per CPU second of each, and the median of the paired ratios. Nothing
asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # streambench, when run as a file

from streambench.data import BATCH, encode, make_data, registry_for, train_and_register


class _Null:
    """A source and sink that accept everything at once."""

    url = "null://"
    topic = "in"

    def send(self, records: Any) -> None: ...
    def flush(self, *, timeout: float) -> None: ...
    def commit(self, messages: Any) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


def _register_candidate(root: Path, registry: Any, pickle: Path) -> int:
    """The champion's own model again, as the next version of ``bench-lr``."""
    from headrace.release.bundle import build_draft

    scratch = root / "draft-candidate"
    scratch.mkdir()
    draft = build_draft(
        pickle,
        name="bench-lr",
        flavor="sklearn",
        workdir=scratch,
        schema_path=root / "schema.yaml",
        data_path=root / "train.parquet",
        metrics_path=pickle.parent / "metrics.json",
        config_path=root / "config.yaml",
        code_version="bench-candidate",
    )
    version: int = registry.register(draft, allow_duplicate=True).version
    return version


def _median_us(fn: Any, *, repeat: int) -> float:
    """Median CPU microseconds (this thread) of one call of `fn`."""
    times = []
    for _ in range(repeat):
        started = time.thread_time_ns()
        fn()
        times.append((time.thread_time_ns() - started) / 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from headrace.inference.loading import load_release
    from headrace.pipeline import Worker, pipeline_spec_from_dict
    from headrace.pipeline.build import tune_worker_process
    from headrace.registry.refs import parse_ref
    from headrace.rollout.compat import plan_rollout
    from headrace.rollout.follow import ReleaseFollower
    from headrace.rollout.judge import judge
    from headrace.rollout.participant import RolloutParticipant, instance_name
    from headrace.rollout.state import plan_of, read_evidence
    from headrace.streams.base import Message

    events = args.batches * BATCH
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        x, y, rows = make_data(events)
        pickles = train_and_register(root, x, y)
        with registry_for(root) as registry:
            candidate = _register_candidate(root, registry, pickles["lr"])
            plan = plan_rollout(registry, "bench-lr", candidate, strategy="canary", steps=[50.0])
            # Never promote here: the lease holder's tick is timed on a running rollout.
            plan = msgspec.structs.replace(plan, max_samples=10**9)
            state = registry.start_rollout(plan)
            initial = load_release(registry, "bench-lr:1")
            follower = ReleaseFollower(registry, parse_ref("bench-lr@champion"), initial=initial)
            follower.poll()  # loads and warms the candidate, publishes the 50% routing
            routing = follower.current
            if routing.candidate is None or routing.weight != 50.0:
                raise SystemExit(f"the follower did not pick up the canary: {routing.describe()}")
            participant = RolloutParticipant(
                registry, instance=instance_name("bench"), interval_s=3600.0
            )
            tune_worker_process()
            batches = [
                [
                    Message(
                        value=encode(j * BATCH + i, rows[j * BATCH + i].tolist()),
                        topic="in",
                        partition=i % 4,
                        offset=j * BATCH + i,
                        key=b"k",
                    )
                    for i in range(BATCH)
                ]
                for j in range(args.batches)
            ]
            spec = pipeline_spec_from_dict(
                {
                    "name": "bench",
                    "model": "bench-lr@champion",
                    "source": {"url": "memory://x", "topic": "in"},
                    "outputs": [{"url": "memory://x", "topic": "out"}],
                    "id_field": "id",
                }
            )
            null = _Null()

            def worker(**rollout: Any) -> Any:
                return Worker(
                    spec,
                    service=initial.service,
                    source=null,  # type: ignore[arg-type]
                    outputs=[null],  # type: ignore[list-item]
                    dead_letter=null,  # type: ignore[arg-type]
                    dedupe=None,
                    **rollout,
                )

            plain = worker()
            canary = worker(follower=follower, participant=participant)
            for w in (plain, canary):  # warm up: imports, caches, the first children
                for batch in batches:
                    w.process(batch)
            clock = time.thread_time_ns
            off: list[float] = []
            on: list[float] = []
            for r in range(args.repeat):
                spent = {id(plain): 0, id(canary): 0}
                for j, batch in enumerate(batches):
                    for w in (plain, canary) if (r + j) % 2 == 0 else (canary, plain):
                        started = clock()
                        w.process(batch)
                        spent[id(w)] += clock() - started
                off.append(spent[id(plain)] / 1000 / events)
                on.append(spent[id(canary)] / 1000 / events)
            base, with_canary = statistics.median(off), statistics.median(on)
            ratio = statistics.median(a / b for a, b in zip(off, on, strict=True))

            # The lease holder's work, every poll_s in its own thread: flush + lease +
            # judge (and a stored "continue" verdict, throttled), and the judge alone.
            tick_us = _median_us(participant.tick, repeat=args.repeat)
            current = registry.rollout("bench-lr")
            steps = read_evidence(registry, state.id)[: current.step + 1]
            judged = plan_of(current)
            judge_us = _median_us(
                lambda: judge(judged, steps, step=current.step), repeat=args.repeat
            )
            n_b, n_c = steps[-1].baseline.events, steps[-1].candidate.events

    print(
        f"Worker.process, {args.batches} batches of {BATCH} events, no I/O, "
        f"median of {args.repeat} pairs (CPU time of the main thread):"
    )
    print(
        f"  no rollout        {base:7.2f} us/event  {1e6 / base:9,.0f} events/s"
        f"  (min {min(off):.2f}, max {max(off):.2f})"
    )
    print(
        f"  50% canary        {with_canary:7.2f} us/event  {1e6 / with_canary:9,.0f} events/s"
        f"  (min {min(on):.2f}, max {max(on):.2f})"
    )
    print(f"  canary throughput / no rollout: {ratio:.1%} (median of paired ratios)")
    print(
        f"Lease holder, per tick: RolloutParticipant.tick {tick_us:,.0f} us; "
        f"judge alone {judge_us:,.0f} us (on n={n_b:,}/{n_c:,} events per arm)"
    )


if __name__ == "__main__":
    main()
