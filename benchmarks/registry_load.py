"""Register and load a ~50 MB scikit-learn release, and time every step of both paths.

Usage::

    .venv/bin/python benchmarks/registry_load.py [--size-mb 50] [--repeat 3]
        [--rows 100000] [--registry postgresql://postgres@127.0.0.1:5432/test]

A seeded RandomForestClassifier on 20 synthetic features is grown until its pickle is
about ``--size-mb``; it is registered with a schema, a config, metrics and a
``--rows``-row training-data Parquet (so the fingerprint and the profile are included),
through the public API the CLI uses: `build_draft`, `check_draft`, `Registry.register`.
Then it is loaded the way a worker loads it: `load_service` (`Registry.get` +
`Registry.fetch` + the flavor loader), with an empty release cache ("cold") and with a
filled one ("warm", whose files are still sha256-checked), and scores ``--infer-rows``
(512) rows. Both paths are also timed in a new process, where imports count: ``headrace
register`` itself, and a worker from interpreter start to its first prediction.

Each repeat uses a fresh registry, artifact store and cache in a temporary directory
(SQLite by default; with ``--registry`` a PostgreSQL server too, in a scratch database
created and dropped per repeat). The OS page cache is left alone: "cold" means headrace's
cache is empty, not that the disk is. The breakdown rows (indented) are measured by
separate calls, so they explain their total rather than add up to it exactly; one
untimed repeat first (``--warmup``) keeps lazy imports out of the in-process rows. Start-up
time of ``headrace --help`` and of importing the CLI is measured for comparison.

Numbers go to ``benchmarks/README.md`` by hand; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from headrace.inference import columns_from_arrow
from headrace.inference.contract import check_draft
from headrace.inference.loading import load_service
from headrace.registry import Registry
from headrace.release import (
    build_draft,
    canonical_json,
    file_sha256,
    fingerprint_table,
    profile_table,
    read_training_data,
)
from headrace.runtimes.loader import load_model

N_FEATURES = 20
NAME = "bench"
SEED = 0
PROBE_TREES = 4
# A new worker process: import, load the release, score one batch; prints its timings.
WORKER = """
import json, sys, time
start = time.perf_counter()
from pathlib import Path
from headrace.inference.loading import load_service
from headrace.registry import Registry
imported = time.perf_counter()
url, artifacts, cache, ref, batch_path = sys.argv[1:]
registry = Registry(url, artifacts=artifacts, actor="bench@localhost", cache_dir=Path(cache))
service = load_service(registry, ref)
loaded = time.perf_counter()
import pyarrow.parquet as pq
from headrace.inference import columns_from_arrow
table = pq.read_table(batch_path)
columns = columns_from_arrow(table)
ready = time.perf_counter()
service.infer(columns, n_rows=table.num_rows)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "load": loaded - imported, "infer": done - ready}))
"""
SCHEMA_LINES = [
    "fields:",
    *(f"  - {{name: f{i:02d}, type: float}}" for i in range(N_FEATURES)),
]


@dataclass
class Timings:
    """Seconds per step, one entry per repeat, in the order steps were first timed."""

    runs: dict[str, list[float]] = field(default_factory=dict)

    @contextmanager
    def measure(self, step: str) -> Iterator[None]:
        """Time the body of the ``with`` block as one run of `step`."""
        gc.collect()  # garbage of the previous step is not this step's cost
        start = time.perf_counter()
        yield
        self.add(step, time.perf_counter() - start)

    def add(self, step: str, seconds: float) -> None:
        """Record one run of `step` measured elsewhere (in a child process)."""
        self.runs.setdefault(step, []).append(seconds)


@dataclass(frozen=True)
class Inputs:
    """The files a release is built from, and a batch to score."""

    directory: Path
    model: Path
    schema: Path
    config: Path
    metrics: Path
    data: Path
    batch: dict[str, Any]
    batch_rows: int
    batch_file: Path
    trees: int
    nodes: int


def train_inputs(directory: Path, *, size_mb: float, rows: int, batch_rows: int) -> Inputs:
    """Write a ~`size_mb` MB model pickle and its release inputs to `directory`."""
    x, y = make_classification(
        n_samples=rows,
        n_features=N_FEATURES,
        n_informative=10,
        flip_y=0.05,
        random_state=SEED,
    )
    # Grow a few trees, measure their pickled size, then add as many as the target needs
    # (warm_start keeps the first ones, so the model is the same for a given size).
    model = RandomForestClassifier(
        n_estimators=PROBE_TREES, random_state=SEED, n_jobs=-1, warm_start=True
    )
    model.fit(x, y)
    model_path = directory / "model.pkl"
    joblib.dump(model, model_path)
    per_tree = model_path.stat().st_size / PROBE_TREES
    model.set_params(n_estimators=max(PROBE_TREES, math.ceil(size_mb * 1e6 / per_tree)))
    model.fit(x, y)
    train_accuracy = float(model.score(x[:2000], y[:2000]))
    # A worker scores one small batch at a time: no joblib pool per predict call.
    model.set_params(n_jobs=None, warm_start=False)
    joblib.dump(model, model_path)
    trees = len(model.estimators_)
    nodes = sum(int(tree.tree_.node_count) for tree in model.estimators_)
    del model

    schema = directory / "schema.yaml"
    schema.write_text("\n".join(SCHEMA_LINES) + "\n", encoding="utf-8")
    config = directory / "config.yaml"
    config.write_text("threshold: 0.5\nlabels: [negative, positive]\n", encoding="utf-8")
    metrics = directory / "metrics.json"
    metrics.write_text(f'{{"train_accuracy": {train_accuracy}}}\n', encoding="utf-8")
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    table = pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "label": y})
    data = directory / "train.parquet"
    pq.write_table(table, data)

    fresh, _ = make_classification(
        n_samples=batch_rows,
        n_features=N_FEATURES,
        n_informative=10,
        random_state=SEED + 1,
    )
    batch_table = pa.table({n: fresh[:, i] for i, n in enumerate(names)})
    batch_file = directory / "batch.parquet"
    pq.write_table(batch_table, batch_file)
    batch = columns_from_arrow(batch_table)
    return Inputs(
        directory=directory,
        model=model_path,
        schema=schema,
        config=config,
        metrics=metrics,
        data=data,
        batch=batch,
        batch_rows=batch_rows,
        batch_file=batch_file,
        trees=trees,
        nodes=nodes,
    )


@contextmanager
def scratch_registry_url(root: Path, server: str | None) -> Iterator[str]:
    """A fresh, empty registry: a SQLite file under `root`, or a scratch PostgreSQL database."""
    if server is None:
        yield f"sqlite:///{root / 'registry.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(server.replace("postgresql://", "postgresql+psycopg://", 1))
    database = f"headrace_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        try:
            yield parsed.set(database=database).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def open_registry(url: str, root: Path, cache: str) -> Registry:
    """A new `Registry` object, as a new worker process would make one."""
    return Registry(
        url,
        artifacts=f"file://{root / 'artifacts'}",
        actor="bench@localhost",
        cache_dir=root / cache,
    )


def one_repeat(inputs: Inputs, *, server: str | None, timings: Timings) -> dict[str, int]:
    """Register the release into a fresh registry and load it back; return file sizes."""
    with (
        tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp,
        scratch_registry_url(Path(tmp), server) as url,
    ):
        root = Path(tmp)
        workdir = root / "draft"
        workdir.mkdir()

        # -- register -----------------------------------------------------------------
        with timings.measure("build_draft (hash, fingerprint, profile)"):
            draft = build_draft(
                inputs.model,
                name=NAME,
                flavor="sklearn",
                workdir=workdir,
                schema_path=inputs.schema,
                data_path=inputs.data,
                metrics_path=inputs.metrics,
                config_path=inputs.config,
            )
        with timings.measure("  sha256 of model.pkl"):
            file_sha256(inputs.model)
        with timings.measure("  read train.parquet"):
            table = read_training_data(inputs.data)
        with timings.measure("  fingerprint_table"):
            fingerprint_table(table, source=inputs.data.name)
        with timings.measure("  profile_table"):
            profile_table(table)
        del table
        with timings.measure("check_draft (load + score sample)"):
            draft, _ = check_draft(draft)
        with timings.measure("  load_model (joblib.load)"):
            loaded = load_model("sklearn", model_dir=inputs.directory, entry=inputs.model.name)
        del loaded

        registry = open_registry(url, root, "cache-a")
        with timings.measure("open registry + create tables"):
            registry.check()
        with timings.measure("register (re-hash, upload, transaction)"):
            release = registry.register(draft, alias="champion")
        registry.close()
        with timings.measure("  copy model.pkl (as the upload does)"):
            shutil.copyfile(inputs.model, root / "copy.pkl")
        (root / "copy.pkl").unlink()

        # -- load, the way a worker does ----------------------------------------------
        ref = f"{NAME}@champion"
        registry = open_registry(url, root, "cache-b")
        with timings.measure("load_service, cold cache"):
            service = load_service(registry, ref)
        registry.close()
        with timings.measure(f"first infer, {inputs.batch_rows} rows"):
            service.infer(inputs.batch, n_rows=inputs.batch_rows)
        with timings.measure(f"second infer, {inputs.batch_rows} rows"):
            service.infer(inputs.batch, n_rows=inputs.batch_rows)
        del service

        registry = open_registry(url, root, "cache-b")
        with timings.measure("load_service, warm cache"):
            service = load_service(registry, ref)
        registry.close()
        del service

        registry = open_registry(url, root, "cache-c")
        with timings.measure("  Registry.get, new connection"):
            registry.get(ref)
        with timings.measure("  Registry.get, again"):
            got = registry.get(ref)
        with timings.measure("  Registry.fetch, cold (copy, sha256 x2)"):
            fetched = registry.fetch(got)
        with timings.measure("  Registry.fetch, warm (sha256)"):
            registry.fetch(got)
        with timings.measure("  load_model (joblib.load) from cache"):
            loaded = load_model("sklearn", model_dir=fetched, entry=inputs.model.name)
        del loaded
        registry.close()

        # -- the same two paths, each in a new process ----------------------------------
        cli = root / "cli"
        env = {
            **os.environ,
            "HEADRACE_HOME": str(cli),
            "HEADRACE_REGISTRY": url,
            "HEADRACE_ARTIFACTS": f"file://{cli / 'artifacts'}",  # an empty store: real upload
        }
        command = [
            headrace_executable(),
            "register",
            str(inputs.model),
            *("--name", f"{NAME}-cli", "--schema", str(inputs.schema), "--data", str(inputs.data)),
            *("--metrics", str(inputs.metrics), "--config", str(inputs.config)),
            *("--alias", "champion"),
        ]
        with timings.measure("headrace register ... (new process)"):
            run(command, env=env, cwd=root)
        worker = [
            sys.executable,
            "-c",
            WORKER,
            url,
            f"file://{root / 'artifacts'}",
            str(root / "cache-d"),
            ref,
            str(inputs.batch_file),
        ]
        with timings.measure("new worker process: start to first prediction"):
            done = run(worker, cwd=root)
        parts = json.loads(done.stdout)
        timings.add("  import headrace (in the worker)", parts["import"])
        timings.add("  load_service, cold cache (in the worker)", parts["load"])
        timings.add(f"  first infer, {inputs.batch_rows} rows (in the worker)", parts["infer"])

        sample = next(p for p in workdir.iterdir() if p.suffix == ".parquet")
        sizes = {
            "model.pkl": inputs.model.stat().st_size,
            "train.parquet": inputs.data.stat().st_size,
            "reference sample.parquet": sample.stat().st_size,
            "manifest (canonical JSON)": len(canonical_json(release.manifest)),
            "artifact store": sum(
                p.stat().st_size for p in (root / "artifacts").rglob("*") if p.is_file()
            ),
        }
        if server is None:
            sizes["registry.db (+ WAL)"] = sum(
                p.stat().st_size for p in root.glob("registry.db*") if p.is_file()
            )
        return sizes


def run(argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; on failure, exit with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **options)
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} {argv[1]} failed ({done.returncode}):\n{done.stderr}")
    return done


def time_command(argv: list[str], *, runs: int) -> list[float]:
    """Wall-clock seconds of `runs` runs of a command (output discarded, must succeed)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(argv)
        times.append(time.perf_counter() - start)
    return times


def headrace_executable() -> str:
    """The ``headrace`` script next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "headrace"
    found = str(beside) if beside.is_file() else shutil.which("headrace")
    if found is None:
        raise SystemExit("headrace is not installed: run `make install` first")
    return found


def format_table(title: str, runs: dict[str, list[float]]) -> str:
    """Median, min and max of each step, in milliseconds."""
    width = max(len(step) for step in runs)
    lines = [
        title,
        f"  {'step':<{width}}  {'median':>10}  {'min':>10}  {'max':>10}",
    ]
    for step, values in runs.items():
        ms = [v * 1000 for v in values]
        lines.append(
            f"  {step:<{width}}  {statistics.median(ms):>7.1f} ms"
            f"  {min(ms):>7.1f} ms  {max(ms):>7.1f} ms"
        )
    return "\n".join(lines)


def machine() -> str:
    """One line on where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn

    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, pyarrow {pa.__version__}"
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the options, build the inputs once, run every repeat, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50.0, help="model pickle size [50]")
    parser.add_argument("--repeat", type=int, default=3, help="runs per step [3]")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first [1]")
    parser.add_argument("--rows", type=int, default=100_000, help="training rows [100000]")
    parser.add_argument("--infer-rows", type=int, default=512, help="rows per infer [512]")
    parser.add_argument("--startup-runs", type=int, default=10, help="runs per command [10]")
    parser.add_argument(
        "--registry",
        metavar="POSTGRES_URL",
        help="also benchmark a PostgreSQL registry on this server (scratch database per run)",
    )
    args = parser.parse_args(argv)
    if args.registry is not None and not args.registry.startswith(("postgresql://", "postgres://")):
        parser.error("--registry takes a postgresql://user@host:port/db URL")

    print(f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {machine()}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    backends: list[tuple[str, str | None]] = [("SQLite", None)]
    if args.registry is not None:
        backends.append(("PostgreSQL", args.registry.replace("postgres://", "postgresql://", 1)))

    with tempfile.TemporaryDirectory(prefix="headrace-bench-inputs-") as tmp:
        start = time.perf_counter()
        inputs = train_inputs(
            Path(tmp), size_mb=args.size_mb, rows=args.rows, batch_rows=args.infer_rows
        )
        print(
            f"model: RandomForestClassifier, {inputs.trees} trees, {inputs.nodes:,} nodes, "
            f"{args.rows:,} rows x {N_FEATURES} features "
            f"(built in {time.perf_counter() - start:.1f} s, not timed below)"
        )
        sizes: dict[str, int] = {}
        for label, server in backends:
            timings = Timings()
            for _ in range(args.warmup):  # lazy imports and first-call costs, not timed
                one_repeat(inputs, server=server, timings=Timings())
            for _ in range(args.repeat):
                sizes.update(one_repeat(inputs, server=server, timings=timings))
            title = f"{label} registry, local artifact store: {args.repeat} runs"
            print()
            print(format_table(f"{title} after {args.warmup} untimed", timings.runs))

    print()
    print("file sizes")
    for what, size in sizes.items():
        print(f"  {what:<28} {size / 1e6:>9.2f} MB  ({size:,} bytes)")

    startup: dict[str, list[float]] = {
        "python -c pass": time_command([sys.executable, "-c", "pass"], runs=args.startup_runs),
        "python -c 'import headrace.cli.main'": time_command(
            [sys.executable, "-c", "import headrace.cli.main"], runs=args.startup_runs
        ),
        "headrace --help": time_command([headrace_executable(), "--help"], runs=args.startup_runs),
    }
    print()
    print(format_table(f"start-up ({args.startup_runs} runs)", startup))


if __name__ == "__main__":
    main()
