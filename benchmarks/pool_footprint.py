"""Which footprint measurement is right and cheap? (run by hand; results in README.md)

For models of a known size, in a fresh process per flavor: warm the flavor's imports with a
tiny model, then load the big model three times (all three kept alive, as a pool keeps
them) and report, per load, the growth of the resident set (RSS), the object graph size,
the tracemalloc delta, and what each measurement costs.

    .venv/bin/python benchmarks/pool_footprint.py
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

MB = 1e6

PYTHON_MODEL = """
import numpy as np
from headrace.runtimes import ModelOutput

class Model:
    def __init__(self):
        self.weights = np.load(__file__.replace("model.py", "weights.npy"))

    def predict(self, matrix):
        return ModelOutput(predictions=matrix @ self.weights[: matrix.shape[1], 0])
"""


def _write_models(root: Path) -> dict[str, dict[str, Any]]:
    """Model files per case: flavor, directory, entry, and the size we know it has."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(7)
    x = rng.normal(size=(20_000, 20))
    y = (x[:, 0] + rng.normal(0, 1, len(x)) > 0).astype(int)
    cases: dict[str, dict[str, Any]] = {}

    weights = rng.normal(size=(50_000, 100))  # 40 MB
    for name, w in (("python-tiny", weights[:10]), ("python", weights)):
        d = root / name
        d.mkdir()
        np.save(d / "weights.npy", w)
        (d / "model.py").write_text(PYTHON_MODEL)
        cases[name] = {"flavor": "python", "dir": d, "entry": "model.py:Model", "known": w.nbytes}

    for name, trees in (("sklearn-tiny", 1), ("sklearn", 60)):
        forest = RandomForestClassifier(n_estimators=trees, random_state=0).fit(x, y)
        known = sum(
            e.tree_.__getstate__()["nodes"].nbytes + e.tree_.__getstate__()["values"].nbytes
            for e in forest.estimators_
        )
        d = root / name
        d.mkdir()
        joblib.dump(forest, d / "model.pkl")
        cases[name] = {"flavor": "sklearn", "dir": d, "entry": "model.pkl", "known": known}

    import lightgbm as lgb

    for name, rounds in (("lightgbm-tiny", 2), ("lightgbm", 800)):
        booster = lgb.train(
            {"objective": "binary", "num_leaves": 63, "verbose": -1},
            lgb.Dataset(x, y),
            num_boost_round=rounds,
        )
        d = root / name
        d.mkdir()
        booster.save_model(str(d / "model.txt"))
        known = (d / "model.txt").stat().st_size  # the text; the native trees are smaller
        cases[name] = {"flavor": "lightgbm", "dir": d, "entry": "model.txt", "known": known}
    return cases


def _measure_case(case: dict[str, Any], tiny: dict[str, Any]) -> dict[str, Any]:
    from headrace.runtimes import load_model, object_graph_bytes, resident_bytes
    from headrace.runtimes.footprint import _trim

    def load(c: dict[str, Any]) -> Any:
        return load_model(c["flavor"], model_dir=Path(c["dir"]), entry=c["entry"])

    load(tiny)  # the flavor's imports, so they are not charged to the model
    kept = []
    rows = []
    for _ in range(3):
        gc.collect()
        _trim()
        before = resident_bytes() or 0
        started = time.perf_counter()
        model = load(case)
        load_s = time.perf_counter() - started
        t = time.perf_counter()
        _trim()
        trim_s = time.perf_counter() - t
        rss = (resident_bytes() or 0) - before
        started = time.perf_counter()
        graph = object_graph_bytes(model)
        graph_s = time.perf_counter() - started
        kept.append(model)
        rows.append(
            {"rss": rss, "graph": graph, "load_s": load_s, "graph_s": graph_s, "trim_s": trim_s}
        )
    del kept
    gc.collect()
    tracemalloc.start()
    snap = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    model = load(case)
    traced_load_s = time.perf_counter() - started
    traced = tracemalloc.get_traced_memory()[0] - snap
    tracemalloc.stop()
    del model
    # A reload after freeing (what an evicted model's successor sees).
    gc.collect()
    _trim()
    before = resident_bytes() or 0
    again = load(case)
    _trim()
    after_free = (resident_bytes() or 0) - before
    del again
    return {
        "known": case["known"],
        "loads": rows,
        "tracemalloc": traced,
        "tracemalloc_load_s": traced_load_s,
        "rss_after_free": after_free,
    }


def main() -> None:
    if len(sys.argv) == 4:  # child: one case
        cases = json.loads(Path(sys.argv[1]).read_text())
        print(json.dumps(_measure_case(cases[sys.argv[2]], cases[sys.argv[3]])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cases = _write_models(Path(tmp))
        spec = Path(tmp) / "cases.json"
        spec.write_text(json.dumps({k: {**v, "dir": str(v["dir"])} for k, v in cases.items()}))
        print(
            f"{'case':10} {'known MB':>9} {'RSS MB (3 loads)':>22} {'graph MB':>9} "
            f"{'tracemalloc MB':>15} {'RSS reload MB':>14} {'load ms':>8} {'graph ms':>9} "
            f"{'traced load ms':>15} {'trim ms':>8}"
        )
        for name in ("python", "sklearn", "lightgbm"):
            out = subprocess.run(
                [sys.executable, __file__, str(spec), name, f"{name}-tiny"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out)
            loads = r["loads"]
            rss = " / ".join(f"{x['rss'] / MB:.1f}" for x in loads)
            print(
                f"{name:10} {r['known'] / MB:9.1f} "
                f"{rss:>22} "
                f"{loads[0]['graph'] / MB:9.1f} {r['tracemalloc'] / MB:15.1f} "
                f"{r['rss_after_free'] / MB:14.1f} "
                f"{np.median([x['load_s'] for x in loads]) * 1000:8.1f} "
                f"{np.median([x['graph_s'] for x in loads]) * 1000:9.2f} "
                f"{r['tracemalloc_load_s'] * 1000:15.1f} "
                f"{np.median([x['trim_s'] for x in loads]) * 1000:8.2f}"
            )


if __name__ == "__main__":
    main()
