"""OIP v2 over HTTP: ``headrace serve`` against MLServer, same model, same load generator.

Usage (see benchmarks/README.md for the MLServer venv and wrk)::

    .venv/bin/python benchmarks/serving_vs_mlserver.py [--mlserver /tmp/mlserver-venv/bin/mlserver]
        [--repeat 3] [--duration 10] [--connections 1,16,64] [--rows 1,100]
        [--omp-threads 1] [--profile DIR] [--skip-pool] [--only headrace|mlserver]

The model: a scikit-learn ``LogisticRegression`` on 20 float features (10,000 seeded
synthetic rows), one joblib file served by both. headrace serves it as release ``lr:1``
(``champion``) of a temporary SQLite registry, through ``headrace serve`` with adaptive
batching; MLServer 1.7.1 (``mlserver``, ``mlserver-sklearn``, installed in a venv of their
own, never a dependency of headrace) serves the same file with
``mlserver_sklearn.SKLearnModel``, adaptive batching (``max_batch_size`` 64 requests,
``max_batch_time`` 2 ms), ``parallel_workers: 0`` (its worker pool fails to start here:
"There is no current event loop") and ``debug: false``. headrace bounds batches in rows,
so it gets the same bound in rows, 64 requests of at most 100 rows: ``max_batch_size:
6400``, ``max_batch_time_ms: 2`` (and ``max_queue_rows: 16384``: MLServer's queue has no
bound, headrace's default would turn some of 64 connections x 100 rows away with 503).
Both listen on 127.0.0.1 and run with ``OMP_NUM_THREADS`` (and the OpenBLAS/MKL
equivalents) = ``--omp-threads``.

The load: ``wrk`` (Debian's package) with ``benchmarks/oip_post.lua``, one thread,
``--connections`` connections, ``--duration`` seconds, POSTing the same Open Inference
Protocol JSON body to ``/v2/models/lr/infer`` (one FP64 input ``[rows, 20]``, which both
servers accept). Every scenario is preceded by a 2 s warm-up run that is not counted.
Both servers run during the whole benchmark (idle while the other is measured), and the
scenarios are interleaved: repeat, rows, connections, then headrace and MLServer back to
back. Reported: requests/s, p50 and p99 latency (wrk's own histogram), median of
``--repeat`` runs with min and max; any non-2xx answer or socket error is counted and
shown (a run with errors is not a valid run). Before measuring, the predictions of both
servers on the benchmark bodies are checked to be the model's own.

The pool (unless ``--skip-pool``): 20 releases of a 30-tree ``RandomForestClassifier``
(about 5 MB each as the pool measures it: the median of the 20 footprints a first server
reports in ``/metrics`` with no budget), served by a second server with a budget of 5.5
footprints, all 20 model URLs requested in turn (round robin, LRU's worst case) by wrk at
16 connections: it reports requests/s, latency, errors, and, read from ``/metrics``,
models resident, evictions, cold loads, and the server's peak RSS (VmHWM).

``--profile DIR``: py-spy (``.venv/bin/pip install py-spy``, ``--gil``: only the thread
holding the GIL, i.e. the Python work that serialises) samples the headrace server during
one extra single-row run at the highest concurrency; the raw stacks go to DIR and the own
time grouped by part (HTTP protocol, event loop, serving, inference core, model, ...) and
the functions with the most samples are printed.

The servers, wrk and py-spy share the machine's cores. Nothing asserts.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
LUA = HERE / "oip_post.lua"
N_FEATURES = 20
MODEL = "lr"
BATCH_REQUESTS = 64
BATCH_TIME_MS = 2.0
MAX_ROWS = 100  # the largest request of the benchmark
POOL_MODELS = 20
POOL_FITS = 5


@dataclass(frozen=True)
class Run:
    """One wrk run, as its Lua ``done`` hook reported it."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def thread_env(omp_threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if omp_threads > 0:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(omp_threads)
    return env


@contextmanager
def process(
    argv: list[str], *, log: Path, cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own session; stop it (and its children) by process group."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def http(url: str, body: bytes | None = None, *, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 (a loopback URL we built)
        url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(base: str, *, model: str | None, log: Path, timeout: float = 120.0) -> None:
    """Wait for the model to be ready (None: for the server to be, all preloads done)."""
    path = "/v2/health/ready" if model is None else f"/v2/models/{model}/ready"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = http(f"{base}{path}", timeout=2.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"server at {base} not ready after {timeout:.0f}s; see {log}")


# -- the model and the servers ---------------------------------------------------------


def train(directory: Path, *, kind: str, seed: int) -> tuple[Path, np.ndarray]:
    """Fit a model on seeded synthetic data; write it with its release inputs."""
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10_000, N_FEATURES))
    y = (x @ rng.normal(size=N_FEATURES) + rng.normal(0, 0.5, len(x)) > 0).astype(int)
    if kind == "lr":
        model: Any = LogisticRegression(max_iter=1000).fit(x, y)
    else:
        model = RandomForestClassifier(n_estimators=30, random_state=seed, n_jobs=1).fit(x, y)
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"f{i}" for i in range(N_FEATURES)]
    joblib.dump(model, directory / "model.joblib")
    (directory / "schema.yaml").write_text(
        yaml.safe_dump({"fields": [{"name": n, "type": "float"} for n in names]})
    )
    pq.write_table(
        pa.table({**{n: x[:2000, i] for i, n in enumerate(names)}, "label": y[:2000]}),
        directory / "train.parquet",
    )
    (directory / "metrics.json").write_text(json.dumps({"accuracy": float(model.score(x, y))}))
    return directory / "model.joblib", x


def register(registry_url: str, artifacts: str, home: Path, model_dir: Path, name: str) -> None:
    from headrace.registry import Registry
    from headrace.release.bundle import build_draft

    home.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-draft-", dir=home))
    with Registry(
        registry_url, artifacts=artifacts, actor="bench", cache_dir=home / "cache"
    ) as registry:
        draft = build_draft(
            model_dir / "model.joblib",
            name=name,
            flavor="sklearn",
            workdir=scratch,
            schema_path=model_dir / "schema.yaml",
            data_path=model_dir / "train.parquet",
            metrics_path=model_dir / "metrics.json",
        )
        registry.register(draft, alias="champion")
    shutil.rmtree(scratch)


@dataclass(frozen=True)
class Headrace:
    """Where a `headrace serve` process finds its registry."""

    registry: str
    artifacts: str
    home: Path

    def argv(self, config: Path, *, port: int) -> list[str]:
        executable = Path(sys.executable).with_name("headrace")
        return [
            str(executable),
            "--registry",
            self.registry,
            "--artifacts",
            self.artifacts,
            "--home",
            str(self.home),
            "serve",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]


def headrace_config(
    path: Path, *, budget_bytes: int | None = None, models: list[str] | None = None
) -> Path:
    import yaml

    config: dict[str, Any] = {
        # MLServer's max_batch_size counts requests, headrace's counts rows: 64 requests of
        # up to 100 rows. MLServer's queue is unbounded; headrace's default bound (4,096
        # rows) would answer 503 to 64 connections of 100 rows, which is its job but not
        # this comparison's.
        "batching": {
            "max_batch_size": BATCH_REQUESTS * MAX_ROWS,
            "max_batch_time_ms": BATCH_TIME_MS,
            "max_queue_rows": 16_384,
        },
    }
    if budget_bytes is not None:
        config["memory_budget_mb"] = budget_bytes / 2**20
    if models is not None:
        config["models"] = models
    path.write_text(yaml.safe_dump(config))
    return path


def mlserver_repository(root: Path, model_file: Path, *, port: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "parallel_workers": 0,
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    model_dir = root / MODEL
    model_dir.mkdir(exist_ok=True)
    shutil.copy(model_file, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "max_batch_size": BATCH_REQUESTS,
                "max_batch_time": BATCH_TIME_MS / 1000.0,
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    return root


def oip_body(x: np.ndarray) -> bytes:
    payload = {
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }
    return json.dumps(payload).encode()


def predictions_of(answer: bytes) -> list[Any]:
    outputs = json.loads(answer)["outputs"]
    first = next(o for o in outputs if o["name"] in ("predict", "prediction"))
    return [int(v) for v in np.asarray(first["data"]).ravel().tolist()]


def check_answers(base: str, body: bytes, expected: np.ndarray, *, who: str) -> None:
    status, answer = http(f"{base}/v2/models/{MODEL}/infer", body)
    if status != 200:
        raise SystemExit(f"{who} answered {status}: {answer[:500]!r}")
    got = predictions_of(answer)
    if got != expected.tolist():
        raise SystemExit(f"{who} predictions differ from the model's: {got[:10]} vs {expected}")


# -- load --------------------------------------------------------------------------------


def wrk(
    url: str,
    *,
    body: Path,
    connections: int,
    seconds: float,
    paths: Path | None = None,
) -> Run:
    env = {**os.environ, "OIP_BODY": str(body)}
    if paths is not None:
        env["OIP_PATHS"] = str(paths)
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("@@wrk ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("@@wrk "))
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Run(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=errors,
    )


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    middle = statistics.median(values)
    if len(values) == 1:
        return fmt.format(middle)
    return f"{fmt.format(middle)} ({fmt.format(min(values))} to {fmt.format(max(values))})"


def table(results: dict[tuple[str, int, int], list[Run]], rows: list[int], conns: list[int]) -> str:
    servers = sorted({key[0] for key in results}, key=["headrace", "mlserver"].index)
    head = ["rows", "conns"]
    for server in servers:
        head += [f"{server} req/s", f"{server} p50 ms", f"{server} p99 ms"]
    if len(servers) == 2:
        head += ["req/s ratio", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n_rows in rows:
        for conn in conns:
            cells = [str(n_rows), str(conn)]
            medians: dict[str, tuple[float, float]] = {}
            for server in servers:
                runs = results[(server, n_rows, conn)]
                cells += [
                    spread([r.rps for r in runs]),
                    spread([r.p50_ms for r in runs], "{:.1f}"),
                    spread([r.p99_ms for r in runs], "{:.1f}"),
                ]
                errors = sum(r.errors for r in runs)
                if errors:
                    cells[-3] += f" ({errors} errors)"
                medians[server] = (
                    statistics.median(r.rps for r in runs),
                    statistics.median(r.p99_ms for r in runs),
                )
            if len(servers) == 2:
                (h_rps, h_p99), (m_rps, m_p99) = medians["headrace"], medians["mlserver"]
                met = h_rps >= 2 * m_rps and h_p99 <= m_p99
                cells += [f"{h_rps / m_rps:.1f}x", "met" if met else "missed"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- the pool scenario -------------------------------------------------------------------


def metric(text: str, name: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else float("nan")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def pool_scenario(
    work: Path, server: Headrace, *, env: dict[str, str], seconds: float, body: Path
) -> dict[str, Any]:
    for i in range(POOL_MODELS):
        model_dir = work / f"forest-{i}"
        train(model_dir, kind="forest", seed=100 + i)
        register(server.registry, server.artifacts, server.home, model_dir, f"forest{i}")
    # A model's footprint, as the pool measures it: serve all 20 with no budget (every one
    # is preloaded), read /metrics. The median, because the first load in a process also
    # pays for importing scikit-learn, which a later load does not.
    names = [f"forest{i}" for i in range(POOL_MODELS)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = headrace_config(work / "probe.yaml", models=names)
    with process(server.argv(config, port=port), log=work / "probe.log", cwd=work, env=env):
        wait_ready(base, model=None, log=work / "probe.log")
        _, text = http(f"{base}/metrics")
    footprints = sorted(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith("headrace_pool_model_memory_bytes{")
    )
    if len(footprints) != POOL_MODELS:
        raise SystemExit(f"{len(footprints)} of {POOL_MODELS} footprints in /metrics")
    footprint = statistics.median(footprints)
    budget = int(footprint * (POOL_FITS + 0.5))
    paths = work / "paths.txt"
    paths.write_text("".join(f"/v2/models/forest{i}/infer\n" for i in range(POOL_MODELS)))
    config = headrace_config(work / "pool.yaml", budget_bytes=budget, models=names)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "pool.log"
    with process(server.argv(config, port=port), log=log, cwd=work, env=env) as proc:
        wait_ready(base, model=None, log=log)
        run = wrk(
            f"{base}/v2/models/forest0/infer",
            body=body,
            connections=16,
            seconds=seconds,
            paths=paths,
        )
        _, text = http(f"{base}/metrics")
        metrics = text.decode()
        peak = rss_mb(proc.pid)
        alive = proc.poll() is None
    return {
        "footprint_mb": footprint / 2**20,
        "footprint_range_mb": (footprints[0] / 2**20, footprints[-1] / 2**20),
        "budget_mb": budget / 2**20,
        "run": run,
        "resident": metric(metrics, "headrace_pool_models"),
        "resident_mb": metric(metrics, "headrace_pool_memory_bytes") / 2**20,
        "evictions": metric(metrics, "headrace_pool_evictions_total"),
        "cold_loads": metric(metrics, "headrace_pool_cold_loads_total"),
        "peak_rss_mb": peak,
        "alive": alive,
    }


# -- profile -----------------------------------------------------------------------------


# Where a frame's own time is counted in the grouped profile: the first prefix that matches.
_GROUPS = (
    ("headrace/serving/", "headrace serving: routing, REST codec, batcher"),
    ("headrace/inference/", "headrace inference core: validate, matrix, postprocess"),
    ("headrace/runtimes/", "model: scikit-learn, numpy"),
    ("sklearn/", "model: scikit-learn, numpy"),
    ("numpy/", "model: scikit-learn, numpy"),
    ("scipy/", "model: scikit-learn, numpy"),
    ("uvicorn/", "uvicorn HTTP protocol"),
    ("httptools/", "uvicorn HTTP protocol"),
    ("asyncio/", "event loop (asyncio, uvloop)"),
    ("uvloop/", "event loop (asyncio, uvloop)"),
    ("concurrent/futures/", "worker thread hand-off"),
    ("threading.py", "worker thread hand-off"),
    ("prometheus_client/", "metrics"),
    ("orjson", "JSON"),
    ("msgspec", "JSON"),
)


def profile(pid: int, url: str, *, body: Path, connections: int, seconds: float, out: Path) -> str:
    """Sample the server with py-spy while wrk loads it; the Python time, grouped.

    ``--gil`` samples only the thread holding the GIL: in a Python server that is where
    the serialised time goes (one core's worth at most), and waiting threads stay out.
    """
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "headrace-serve.txt"
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "--duration", f"{seconds:g}"]
    argv += ["--rate", "250", "--gil", "--format", "raw", "--output", str(raw)]
    sampler = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    run = wrk(url, body=body, connections=connections, seconds=seconds + 1)
    sampler.wait(timeout=60)
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame.split(" (")[0] + " " + _where(frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        groups[_group(stack.split(";")[-1])] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return f"py-spy took no samples ({raw})"
    lines = [
        f"py-spy --gil: {samples:,} samples of the GIL holder in {seconds:g} s during wrk "
        f"-c{connections} ({run.rps:,.0f} req/s while sampled), raw stacks in {raw}",
        "",
        "own time by part:",
    ]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in groups.most_common()]
    lines += ["", "own time, top functions:"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(20)]
    lines += ["", "total (the frame or anything it called):"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(40)]
    return "\n".join(lines)


def _group(frame: str) -> str:
    for prefix, name in _GROUPS:
        if prefix in frame:
            return name
    return "other"


def _where(frame: str) -> str:
    match = re.search(r"\(([^)]*)\)", frame)
    if not match:
        return ""
    path = match.group(1)
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"({path})"


# -- main --------------------------------------------------------------------------------


def machine() -> str:
    import sklearn

    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}; "
        f"load average {load[0]:.2f} at the end"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mlserver",
        default="/tmp/mlserver-venv/bin/mlserver",  # noqa: S108 (where README installs it)
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run [10]")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--rows", default="1,100", help="rows per request [1,100]")
    parser.add_argument("--omp-threads", type=int, default=1, help="0: library default [1]")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output directory")
    parser.add_argument("--skip-pool", action="store_true")
    parser.add_argument("--only", choices=["headrace", "mlserver"], default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    conns = [int(c) for c in args.connections.split(",")]
    rows = [int(r) for r in args.rows.split(",")]
    servers = [s for s in ("headrace", "mlserver") if args.only in (None, s)]
    if "mlserver" in servers and not Path(args.mlserver).exists():
        raise SystemExit(f"{args.mlserver} is missing: see benchmarks/README.md")
    started = datetime.datetime.now(datetime.UTC)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    env = thread_env(args.omp_threads)
    print(f"scratch directory {work}", file=sys.stderr)
    try:
        model_file, x = train(work / "lr", kind="lr", seed=0)
        server = Headrace(
            registry=f"sqlite:///{work / 'home' / 'registry.db'}",
            artifacts=f"file://{work / 'home' / 'artifacts'}",
            home=work / "home",
        )
        register(server.registry, server.artifacts, server.home, model_file.parent, MODEL)
        import joblib

        model = joblib.load(model_file)
        bodies: dict[int, Path] = {}
        expected: dict[int, np.ndarray] = {}
        rng = np.random.default_rng(1)
        for n in rows:
            sample = x[rng.choice(len(x), size=n, replace=False)]
            bodies[n] = work / f"body-{n}.json"
            bodies[n].write_bytes(oip_body(sample))
            expected[n] = model.predict(sample)
        bases: dict[str, str] = {}
        pids: dict[str, int] = {}
        results: dict[tuple[str, int, int], list[Run]] = collections.defaultdict(list)
        with ExitStack() as stack:
            if "headrace" in servers:
                port = free_port()
                config = headrace_config(work / "headrace.yaml")
                log = work / "headrace.log"
                pids["headrace"] = stack.enter_context(
                    process(server.argv(config, port=port), log=log, cwd=work, env=env)
                ).pid
                bases["headrace"] = f"http://127.0.0.1:{port}"
                wait_ready(bases["headrace"], model=MODEL, log=log)
            if "mlserver" in servers:
                port = free_port()
                repo = mlserver_repository(work / "mlserver", model_file, port=port)
                log = work / "mlserver.log"
                pids["mlserver"] = stack.enter_context(
                    process([args.mlserver, "start", str(repo)], log=log, cwd=repo, env=env)
                ).pid
                bases["mlserver"] = f"http://127.0.0.1:{port}"
                wait_ready(bases["mlserver"], model=MODEL, log=log)
            for name, base in bases.items():
                for n in rows:
                    check_answers(base, bodies[n].read_bytes(), expected[n], who=name)
            print("both servers answer with the model's predictions", file=sys.stderr)
            for repeat in range(args.repeat):
                for n in rows:
                    for conn in conns:
                        for name in servers:
                            url = f"{bases[name]}/v2/models/{MODEL}/infer"
                            wrk(url, body=bodies[n], connections=conn, seconds=2)
                            run = wrk(url, body=bodies[n], connections=conn, seconds=args.duration)
                            results[(name, n, conn)].append(run)
                            print(
                                f"repeat {repeat + 1}/{args.repeat} {name:8} rows {n:3} "
                                f"conns {conn:2}: {run.rps:8,.0f} req/s p50 {run.p50_ms:6.1f} "
                                f"p99 {run.p99_ms:6.1f} ms errors {run.errors}",
                                file=sys.stderr,
                            )
            profile_text = ""
            if args.profile is not None and "headrace" in servers:
                profile_text = profile(
                    pids["headrace"],
                    f"{bases['headrace']}/v2/models/{MODEL}/infer",
                    body=bodies[rows[0]],
                    connections=max(conns),
                    seconds=args.duration,
                    out=args.profile,
                )
        pool: dict[str, Any] | None = None
        if not args.skip_pool and "headrace" in servers:
            pool = pool_scenario(work, server, env=env, seconds=args.duration, body=bodies[rows[0]])
        print(f"\nrun {started:%Y-%m-%d %H:%M} UTC; {machine()}")
        print(f"wrk -t1, {args.duration:g} s per run, median (min to max) of {args.repeat}\n")
        print(table(results, rows, conns))
        if pool is not None:
            run = pool["run"]
            print(
                f"\npool: {POOL_MODELS} random forests of {pool['footprint_mb']:.1f} MB each "
                f"(median measured footprint, {pool['footprint_range_mb'][0]:.1f} to "
                f"{pool['footprint_range_mb'][1]:.1f} MB), budget {pool['budget_mb']:.1f} MB "
                f"(fits {POOL_FITS}); 16 connections over all "
                f"{POOL_MODELS}: {run.rps:,.0f} req/s, p50 {run.p50_ms:.1f} ms, p99 "
                f"{run.p99_ms:.1f} ms, {run.errors} errors; resident at the end "
                f"{pool['resident']:.0f} models ({pool['resident_mb']:.1f} MB), evictions "
                f"{pool['evictions']:.0f}, cold loads {pool['cold_loads']:.0f}, server peak RSS "
                f"{pool['peak_rss_mb']:.0f} MB, server alive: {pool['alive']}"
            )
        if profile_text:
            print("\n" + profile_text)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
