"""CPU per one-row inference request in process, before and after a change, alternating.

Usage::

    git worktree add --detach /tmp/b2-before 399bf21^
    git worktree add --detach /tmp/b2-after HEAD
    .venv/bin/python benchmarks/dataplane_cpu.py --before /tmp/b2-before --after /tmp/b2-after \\
        [--rounds 9] [--blocks 30] [--per-block 100] [--mode inline|thread|auto]

The serving side of ``worker_cpu.py``: one fresh process per (tree, round), importing
headrace from its tree (``PYTHONPATH=TREE/src``, the same interpreter), the trees
alternating with their order swapped every round. A child registers the stream
benchmark's scikit-learn ``LogisticRegression`` (20 features; trained once by this parent)
as ``fraud@champion`` in a temporary SQLite registry, builds the server's ASGI app with
`build_app` (defaults, ``models: [fraud]``), runs its start-up, and sends one-row Open
Inference Protocol JSON requests one at a time, two ways:

- **httpx**: ``httpx.AsyncClient`` over ``httpx.ASGITransport``, what a user's test would do;
  the client's own work is in the figure, the same in both trees;
- **asgi**: the app called directly with a fixed scope and body, so the figure is the
  app's: routing, parsing, the data plane (after) or the app's own infer (before), the
  batcher (and its hand-off to a worker thread, in ``thread`` mode), the model, the answer.

Issue 11's `DataPlane` does not exist before it, so the app is the common entry point.
Each way is timed in blocks of ``--per-block`` requests: CPU of the whole process
(``time.process_time_ns``: the batcher may run the model on a worker thread) and of the main
thread, per request; a child's result is the median over its blocks, after warm-up
requests. Every answer is checked (status 200, the model's prediction). Nothing asserts.

The batcher's ``mode`` is fixed (``--mode``, default ``inline``): its default, ``auto``,
moves a batch size to the worker thread after two batches over 2 ms of wall time, which
on a loaded machine happens to some processes and not others, so a child would measure
one path or the other by chance (``--mode auto`` shows it: process CPU equal to the main
thread's in some children, up to 80% above it in others).
"""

from __future__ import annotations

import argparse
import asyncio
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # worker_cpu, streambench

from worker_cpu import NAME, _register, paired_interval, prepare

WARMUP = 300
WAYS = ("httpx", "asgi")
MODES = ("inline", "thread")
PATH = f"/v2/models/{NAME}/infer"


def _body(row: np.ndarray) -> bytes:
    payload = {
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [1, row.size], "data": row.tolist()}
        ]
    }
    return json.dumps(payload).encode()


def _prediction(answer: bytes) -> str:
    outputs = json.loads(answer)["outputs"]
    first = next(o for o in outputs if o["name"] in ("predict", "prediction"))
    return str(first["data"][0])


class _Direct:
    """Calls an ASGI app with one request, as a server would, without a socket."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def post(self, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
        }
        done = asyncio.Event()
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        await self.app(scope, receive, send)
        done.set()
        return status, b"".join(chunks)


async def _measure(app: Any, args: argparse.Namespace, rows: np.ndarray, expected: Any) -> Any:
    import httpx

    bodies = [_body(row) for row in rows]
    results: dict[str, dict[str, float]] = {}
    await app.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client:
            direct = _Direct(app)

            async def via_httpx(body: bytes) -> tuple[int, bytes]:
                answer = await client.post(
                    PATH, content=body, headers={"content-type": "application/json"}
                )
                return answer.status_code, answer.content

            ways = {"httpx": via_httpx, "asgi": direct.post}
            for way, post in ways.items():
                for i in range(WARMUP):
                    status, answer = await post(bodies[i % len(bodies)])
                    if status != 200:
                        raise RuntimeError(f"{way}: status {status}: {answer[:300]!r}")
            process_times: dict[str, list[float]] = {w: [] for w in ways}
            thread_times: dict[str, list[float]] = {w: [] for w in ways}
            n = args.per_block
            for b in range(args.blocks):
                for way in ways if b % 2 == 0 else reversed(list(ways)):
                    post = ways[way]
                    start = (b * n) % len(bodies)
                    chosen = [(start + k) % len(bodies) for k in range(n)]
                    answers = []
                    p0, t0 = time.process_time_ns(), time.thread_time_ns()
                    for k in chosen:
                        answers.append(await post(bodies[k]))
                    t1, p1 = time.thread_time_ns(), time.process_time_ns()
                    process_times[way].append((p1 - p0) / 1000 / n)
                    thread_times[way].append((t1 - t0) / 1000 / n)
                    for k, (status, answer) in zip(chosen, answers, strict=True):
                        if status != 200 or _prediction(answer) != expected[k]:
                            raise RuntimeError(f"{way}: wrong answer {status} {answer[:300]!r}")
            for way in ways:
                results[way] = {
                    "process_us": statistics.median(process_times[way]),
                    "thread_us": statistics.median(thread_times[way]),
                    "min_process_us": min(process_times[way]),
                }
    finally:
        await app.shutdown()
    return results


def child(args: argparse.Namespace) -> None:
    """Build the app over a fresh registry, time the requests, print one JSON line."""
    import joblib

    import headrace
    import headrace.serving as serving
    from headrace.registry import Registry

    root = Path(args.root)
    rows = np.load(root / "events.npy")[:1000]
    labels = ["legit", "fraud"]  # the release config's labels, class 0 and 1
    expected = [labels[c] for c in joblib.load(root / "model.pkl").predict(rows).tolist()]
    # Issue 11 renamed serve_config_from_dict to serve_spec_from_dict (7493a23).
    from_dict = getattr(serving, "serve_spec_from_dict", None) or getattr(
        serving, "serve_config_from_dict", None
    )
    if from_dict is None:
        raise RuntimeError(f"{serving.__file__}: no serve_spec_from_dict (or its old name)")
    with tempfile.TemporaryDirectory(prefix="dataplane-cpu-") as scratch:
        home = Path(scratch)
        registry = Registry(
            f"sqlite:///{home / 'registry.db'}",
            artifacts=f"file://{home / 'artifacts'}",
            actor="bench@localhost",
            cache_dir=home / "cache",
        )
        try:
            _register(registry, root, home / "draft-1", alias="champion")
            settings: dict[str, Any] = {"models": [NAME]}
            if args.mode is not None:
                settings["batching"] = {"mode": args.mode}
            config = from_dict(settings, where="dataplane_cpu")
            app = serving.build_app(registry, config)
            results = asyncio.run(_measure(app, args, rows, expected))
        finally:
            registry.close()
    print(json.dumps({"headrace": headrace.__file__, **results}))


def run_child(tree: Path, *, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "child", "--root", str(root)]
    command += ["--blocks", str(args.blocks), "--per-block", str(args.per_block)]
    command += [] if args.mode == "auto" else ["--mode", args.mode]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child for {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    expected = (tree / "src" / "headrace" / "__init__.py").resolve()
    if Path(result["headrace"]).resolve() != expected:
        raise RuntimeError(f"child imported {result['headrace']}, not {expected}")
    return result


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def parent(args: argparse.Namespace) -> None:
    trees = {"before": Path(args.before), "after": Path(args.after)}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="dataplane-cpu-") as scratch:
        root = Path(scratch)
        prepare(root, events=1000)
        print(
            f"load {_load()}; {args.blocks} blocks of {args.per_block} 1-row requests, "
            f"batching mode {args.mode}"
        )
        for r in range(args.rounds):
            for name in trees if r % 2 == 0 else reversed(list(trees)):
                result = run_child(trees[name], root=root, args=args)
                results[name].append(result)
                print(
                    f"round {r + 1} {name:6} "
                    + "  ".join(
                        f"{w} {result[w]['process_us']:6.1f} us/req "
                        f"(thread {result[w]['thread_us']:.1f})"
                        for w in WAYS
                    )
                    + f"  load {_load()}",
                    flush=True,
                )
        print(f"load {_load()}")
    for name, runs in results.items():
        print(f"headrace imported from {runs[0]['headrace']} ({name})")
    print("| way | before us/request (min-max) | after us/request (min-max) | after / before |")
    print("|---|---:|---:|---:|")
    for way in WAYS:
        cells = []
        medians = {}
        for name in trees:
            values = [run[way]["process_us"] for run in results[name]]
            medians[name] = statistics.median(values)
            cells.append(f"**{medians[name]:.1f}** ({min(values):.1f}-{max(values):.1f})")
        print(f"| {way} | {cells[0]} | {cells[1]} | {medians['after'] / medians['before']:.3f} |")
    for way in WAYS:
        pairs = [
            a[way]["process_us"] / b[way]["process_us"]
            for a, b in zip(results["after"], results["before"], strict=True)
        ]
        threads = {
            name: statistics.median(run[way]["thread_us"] for run in results[name])
            for name in trees
        }
        low, high = paired_interval(pairs)
        print(
            f"{way}: after / before per round "
            + ", ".join(f"{p:.3f}" for p in pairs)
            + f" (median {statistics.median(pairs):.3f}, 95% bootstrap {low:.3f}-{high:.3f}); "
            + f"main thread only: {threads['before']:.1f} -> {threads['after']:.1f} us"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    inner = sub.add_parser("child")
    inner.add_argument("--root", required=True)
    inner.add_argument("--blocks", type=int, required=True)
    inner.add_argument("--per-block", type=int, required=True)
    inner.add_argument("--mode", choices=MODES)
    parser.add_argument("--before", help="the before tree (a git worktree)")
    parser.add_argument("--after", help="the after tree (a git worktree)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--per-block", type=int, default=100)
    parser.add_argument("--mode", choices=("auto", *MODES), default="inline")
    args = parser.parse_args()
    if args.command == "child":
        child(args)
        return
    if not args.before or not args.after:
        parser.error("give --before TREE and --after TREE (git worktrees of the two commits)")
    parent(args)


if __name__ == "__main__":
    main()
