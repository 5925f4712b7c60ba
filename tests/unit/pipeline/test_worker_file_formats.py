"""Issue 9, "File sources": one worker over CSV, JSONL and Parquet files of the same data
gives the same outputs.

A CSV row arrives as a JSON object of strings; before the fix every row of a CSV
``file://`` source was dead-lettered (``Expected `float`, got `str` - at `$.alcohol` ``).
Rows are now typed by the release schema, as ``headrace predict`` types CSV files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.datasets import load_wine
from sklearn.tree import DecisionTreeClassifier

from headrace.inference.service import InferenceService
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.pipeline.worker import Worker
from headrace.release.config import ReleaseConfig
from headrace.release.schema import Field, Schema
from headrace.runtimes.sklearn import EstimatorModel
from headrace.streams.file import FileSink, FileSource


@pytest.fixture(scope="module")
def wine() -> tuple[pd.DataFrame, InferenceService, Any]:
    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    names = [str(c) for c in frame.columns]
    model = DecisionTreeClassifier(max_depth=4, random_state=0)
    model.fit(frame.to_numpy(), data.target.to_numpy())
    service = InferenceService(
        EstimatorModel(model, flavor="sklearn"),
        schema=Schema(fields=[Field(name=n, type="float") for n in names]),
        inputs=names,
        config=ReleaseConfig(),
        release="wine:1",
        release_digest="w" * 64,
    )
    events = frame.copy()
    events.insert(0, "event_id", [f"w{i}" for i in range(len(frame))])
    events["ts"] = 1_700_000_000 + np.arange(len(frame))
    return events, service, model


def _run(path: Path, service: InferenceService, tmp_path: Path) -> list[dict[str, Any]]:
    scores = tmp_path / f"{path.suffix[1:]}-scores.jsonl"
    dlq = tmp_path / f"{path.suffix[1:]}-dlq.jsonl"
    spec = pipeline_spec_from_dict(
        {
            "name": "wine",
            "model": "wine:1",
            "source": {"url": f"file://{path}"},
            "outputs": [{"url": f"file://{scores}"}],
            "dead_letter": {"url": f"file://{dlq}"},
            "id_field": "event_id",
            "event_time_field": "ts",
            "batch": {"max_size": 50, "max_wait_ms": 1},
        }
    )
    stats = Worker(
        spec,
        service=service,
        source=FileSource(f"file://{path}"),
        outputs=[FileSink(f"file://{scores}")],
        dead_letter=FileSink(f"file://{dlq}"),
        dedupe=None,
    ).run(until_exhausted=True)
    assert stats.dead_letters == 0, dlq.read_text()
    outputs = [orjson.loads(line) for line in scores.read_bytes().splitlines()]
    for output in outputs:
        del output["processed_at_ms"]
    return outputs


def test_csv_jsonl_and_parquet_sources_give_identical_outputs(
    wine: tuple[pd.DataFrame, InferenceService, Any], tmp_path: Path
) -> None:
    events, service, model = wine
    csv, jsonl, parquet = tmp_path / "w.csv", tmp_path / "w.jsonl", tmp_path / "w.parquet"
    events.to_csv(csv, index=False)
    events.to_json(jsonl, orient="records", lines=True)
    events.to_parquet(parquet, index=False)
    from_jsonl = _run(jsonl, service, tmp_path)
    assert len(from_jsonl) == len(events)
    assert _run(csv, service, tmp_path) == from_jsonl
    assert _run(parquet, service, tmp_path) == from_jsonl
    features = events.drop(columns=["event_id", "ts"]).to_numpy()
    expected = model.predict(features).tolist()
    assert [o["prediction"] for o in from_jsonl] == expected
    assert from_jsonl[3]["event_time_ms"] == (1_700_000_003) * 1000


def test_bad_csv_cells_and_rows_are_dead_letters(
    wine: tuple[pd.DataFrame, InferenceService, Any], tmp_path: Path
) -> None:
    events, service, _ = wine
    csv = tmp_path / "bad.csv"
    events.head(5).to_csv(csv, index=False)
    lines = csv.read_text().splitlines()
    cells = lines[2].split(",")
    cells[1] = "not-a-number"
    lines[2] = ",".join(cells)
    lines[4] = "w3,1.0"  # too few cells
    csv.write_text("\n".join(lines) + "\n")
    scores, dlq = tmp_path / "s.jsonl", tmp_path / "d.jsonl"
    spec = pipeline_spec_from_dict(
        {
            "name": "wine",
            "model": "wine:1",
            "source": {"url": f"file://{csv}"},
            "outputs": [{"url": f"file://{scores}"}],
            "dead_letter": {"url": f"file://{dlq}"},
            "id_field": "event_id",
        }
    )
    stats = Worker(
        spec,
        service=service,
        source=FileSource(f"file://{csv}"),
        outputs=[FileSink(f"file://{scores}")],
        dead_letter=FileSink(f"file://{dlq}"),
        dedupe=None,
    ).run(until_exhausted=True)
    assert (stats.outputs, stats.dead_letters) == (3, 2)
    dead = [orjson.loads(line) for line in dlq.read_bytes().splitlines()]
    reasons = sorted((d["stage"], d["error"]) for d in dead)
    assert reasons[0][0] == "decode" and "row has 2 cells" in reasons[0][1]
    assert reasons[1][0] == "validate" and "$.alcohol" in reasons[1][1]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_monitors_see_typed_features_of_the_right_events(
    suffix: str, wine: tuple[pd.DataFrame, InferenceService, Any], tmp_path: Path
) -> None:
    """Payload samples get each event's own values, typed (not CSV text), also when
    repeats were dropped from the batch (the view's columns are indexed by message)."""
    import pyarrow.parquet as pq

    from headrace.pipeline.dedupe import MemoryDedupe
    from headrace.pipeline.observe import build_monitors

    events, service, _ = wine
    rows = pd.concat([events.head(6), events.iloc[[1, 3]], events.iloc[6:10]])
    path = tmp_path / f"events{suffix}"
    if suffix == ".csv":
        rows.to_csv(path, index=False)
    else:
        rows.to_json(path, orient="records", lines=True)
    spec = pipeline_spec_from_dict(
        {
            "name": "wine",
            "model": "wine:1",
            "source": {"url": f"file://{path}"},
            "outputs": [{"url": f"file://{tmp_path / 'scores.jsonl'}"}],
            "dead_letter": {"url": f"file://{tmp_path / 'dlq.jsonl'}"},
            "id_field": "event_id",
            "samples": {"url": f"file://{tmp_path / 'samples'}", "ratio": 1.0},
            "batch": {"max_size": 64},
        }
    )
    stats = Worker(
        spec,
        service=service,
        source=FileSource(f"file://{path}"),
        outputs=[FileSink(f"file://{tmp_path / 'scores.jsonl'}")],
        dead_letter=FileSink(f"file://{tmp_path / 'dlq.jsonl'}"),
        dedupe=MemoryDedupe(ttl_s=60, max_keys=100),
        monitors=build_monitors(spec, service=service, home=tmp_path / "home"),
    ).run(until_exhausted=True)
    assert (stats.outputs, stats.deduplicated) == (10, 2)
    (sample_file,) = (tmp_path / "samples").rglob("*.parquet")
    samples = pq.read_table(sample_file).to_pylist()
    assert len(samples) == 10
    by_id = events.set_index("event_id")
    for sample in samples:
        assert sample["features"]["alcohol"] == by_id.loc[sample["event_id"], "alcohol"]
