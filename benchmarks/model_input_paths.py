"""The cost of handing a model a DataFrame, and proof the numpy fast path did not move.

Usage::

    .venv/bin/python benchmarks/model_input_paths.py [--batches 400] [--rounds 3] \
        [--before /tmp/hr-before/src]

Every case scores the same 512-row batch through the real `InferenceService.infer`
(validation, layout, model, post-processing), in process, after a warm-up:

- ``array``: a ``LogisticRegression`` fitted on a numpy array of 20 floats (no names): the
  stream fast path, a float64 matrix.
- ``named``: the same model fitted on a DataFrame of 20 named float columns, with its
  signature (the model's order wins): still a float64 matrix, wrapped (no copy) in a
  DataFrame under the fitted names so scikit-learn checks them.
- ``frame``: a Pipeline whose ColumnTransformer selects 2 numeric and 2 string columns by
  name (StandardScaler, OneHotEncoder) and a ``LogisticRegression``: the DataFrame path.
- ``frame-direct``: that Pipeline's own ``predict_proba`` on the same batch as a pandas
  DataFrame, what the model costs without headrace.
- ``frame-layout`` / ``array-layout``: only laying the validated columns out (`model_frame`
  against `model_matrix`), the part of the DataFrame path that is headrace's own.

With ``--before SRC`` the ``array`` case also runs in a subprocess importing headrace from
SRC (a checkout of the commit before the model contract, e.g. ``git worktree add
/tmp/hr-before 6cb9259^``), alternating with this tree's run, so both sit in one run.

Nothing asserts; results go to benchmarks/README.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

ROWS = 512
FEATURES = 20


def _array_case() -> tuple[Any, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    from headrace.inference import InferenceService
    from headrace.release.config import ReleaseConfig
    from headrace.release.schema import Field, Schema
    from headrace.runtimes.sklearn import EstimatorModel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, FEATURES))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    names = [f"f{i}" for i in range(FEATURES)]
    model = EstimatorModel(LogisticRegression().fit(x, y), flavor="sklearn")
    schema = Schema(fields=[Field(name=n, type="float") for n in names])
    service = InferenceService(
        model, schema=schema, inputs=names, config=ReleaseConfig(), release="b:1", release_digest=""
    )
    batch = rng.normal(size=(ROWS, FEATURES))
    return service, {n: batch[:, i].copy() for i, n in enumerate(names)}


def _named_case() -> tuple[Any, dict[str, Any]]:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from headrace.inference import InferenceService, resolve_signature
    from headrace.release.config import ReleaseConfig
    from headrace.release.schema import Field, Schema
    from headrace.runtimes.sklearn import EstimatorModel

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(FEATURES)]
    x = pd.DataFrame(rng.normal(size=(2000, FEATURES)), columns=names)
    y = (x["f0"] + x["f1"] > 0).astype(int)
    model = EstimatorModel(LogisticRegression().fit(x, y), flavor="sklearn")
    schema = Schema(fields=[Field(name=n, type="float") for n in reversed(names)])
    signature = resolve_signature(
        model.signature(), schema=schema, inputs=schema.names, release="b"
    )
    service = InferenceService(
        model,
        schema=schema,
        inputs=schema.names,
        config=ReleaseConfig(),
        release="b:1",
        release_digest="",
        signature=signature,
    )
    batch = rng.normal(size=(ROWS, FEATURES))
    return service, {n: batch[:, i].copy() for i, n in enumerate(names)}


def _frame_case() -> tuple[Any, dict[str, Any]]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from headrace.inference import InferenceService, resolve_signature
    from headrace.release.config import ReleaseConfig
    from headrace.release.schema import Field, Schema
    from headrace.runtimes.sklearn import EstimatorModel

    rng = np.random.default_rng(0)

    def frame(n: int) -> Any:
        return pd.DataFrame(
            {
                "amount": rng.gamma(2.0, 50.0, n),
                "merchant": rng.choice(["grocery", "travel", "online", "fuel"], n).astype(object),
                "hour": rng.integers(0, 24, n),
                "country": rng.choice(["DE", "FR", "US"], n).astype(object),
            }
        )

    train = frame(2000)
    y = ((train["amount"] > 100) & train["merchant"].isin(["travel", "online"])).astype(int)
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["amount", "hour"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant", "country"]),
        ]
    )
    fitted = Pipeline([("prep", prep), ("clf", LogisticRegression())]).fit(train, y)
    model = EstimatorModel(fitted, flavor="sklearn")
    schema = Schema(
        fields=[
            Field(name="amount", type="float"),
            Field(name="merchant", type="string"),
            Field(name="hour", type="int"),
            Field(name="country", type="string"),
        ]
    )
    signature = resolve_signature(
        model.signature(), schema=schema, inputs=schema.names, release="b"
    )
    service = InferenceService(
        model,
        schema=schema,
        inputs=schema.names,
        config=ReleaseConfig(),
        release="b:1",
        release_digest="",
        signature=signature,
    )
    batch = frame(ROWS)
    return service, {c: batch[c].to_numpy() for c in batch.columns}


def _time(call: Any, batches: int) -> list[float]:
    for _ in range(20):
        call()
    samples = []
    for _ in range(batches):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1e3)
    return samples


def _measure(case: str, batches: int) -> list[float]:
    if case == "frame-direct":
        service, columns = _frame_case()
        import pandas as pd

        frame = pd.DataFrame(columns)
        estimator = service.model._estimator
        return _time(lambda: estimator.predict_proba(frame), batches)
    if case in ("array", "named", "frame"):
        service, columns = {"array": _array_case, "named": _named_case, "frame": _frame_case}[
            case
        ]()
        return _time(lambda: service.infer(columns, n_rows=ROWS), batches)
    from headrace.inference import model_frame, model_matrix, validate

    service, columns = _frame_case() if case == "frame-layout" else _array_case()
    valid = validate(service.schema, columns, n_rows=ROWS).columns
    if case == "frame-layout":
        return _time(lambda: model_frame(valid, inputs=service.inputs), batches)
    return _time(lambda: model_matrix(service.schema, valid, inputs=service.inputs), batches)


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p10, p90 = ordered[len(ordered) // 10], ordered[len(ordered) * 9 // 10]
    return f"median {statistics.median(samples):8.1f} us  (p10 {p10:8.1f}, p90 {p90:8.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="headrace source directory of the old commit")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(_measure(args.only, args.batches)))
        return
    cases = ["array", "named", "frame", "frame-direct", "array-layout", "frame-layout"]
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for case in cases:
            results.setdefault(case, []).extend(_measure(case, args.batches))
        if args.before:
            env = {**os.environ, "PYTHONPATH": args.before}
            out = subprocess.run(
                [sys.executable, __file__, "--only", "array", "--batches", str(args.batches)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results.setdefault("array (before)", []).extend(json.loads(out))
    print(f"{ROWS}-row batches, {args.rounds} rounds x {args.batches} batches per case")
    for case, samples in results.items():
        print(f"{case:15s} {_summary(samples)}")


if __name__ == "__main__":
    main()
