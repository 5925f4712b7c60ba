"""`headrace run`, `replay` and `demo` as processes: real files, a real registry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cli import clean_env, headrace
from support.models import draft_from, local_registry, write_sklearn_release


@pytest.fixture
def home(tmp_path: Path) -> Path:
    files = write_sklearn_release(tmp_path / "model")
    home = tmp_path / "home"
    with local_registry(home, actor="e2e") as registry:
        registry.register(draft_from(files, tmp_path), alias="champion")
    return home


def write_events(path: Path, start: int, count: int, *, bad_every: int = 0) -> int:
    bad = 0
    with path.open("a") as handle:
        for i in range(start, start + count):
            if bad_every and i % bad_every == 0:
                handle.write(json.dumps({"event_id": f"e{i}", "f0": "oops"}) + "\n")
                bad += 1
            else:
                row = {"event_id": f"e{i}", **{f"f{j}": (i % 10) / 10 + j for j in range(5)}}
                handle.write(json.dumps(row) + "\n")
    return bad


def pipeline(tmp_path: Path, *, follow: bool = False) -> Path:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "name: scoring\n"
        "model: fraud@champion\n"
        f"source: {{url: 'file://{tmp_path / 'events.jsonl'}', group: scoring,"
        f" options: {{follow: {str(follow).lower()}}}}}\n"
        f"outputs: [{{url: 'file://{tmp_path / 'scores.jsonl'}'}}]\n"
        f"dead_letter: {{url: 'file://{tmp_path / 'dlq.jsonl'}'}}\n"
        "id_field: event_id\n"
        "stats_interval_s: 0.2\n"
    )
    return spec


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_run_resumes_from_its_checkpoint_and_replay_goes_back(home: Path, tmp_path: Path) -> None:
    bad = write_events(tmp_path / "events.jsonl", 0, 500, bad_every=50)
    spec = pipeline(tmp_path)
    first = headrace(home, "run", str(spec), "--until-end", "--json")
    assert first.returncode == 0, first.stderr
    stats = json.loads(first.stdout)
    assert (stats["events"], stats["outputs"], stats["dead_letters"]) == (500, 500 - bad, bad)
    assert len(lines(tmp_path / "scores.jsonl")) == 500 - bad
    assert all(d["stage"] == "validate" for d in lines(tmp_path / "dlq.jsonl"))

    write_events(tmp_path / "events.jsonl", 500, 100)
    second = json.loads(headrace(home, "run", str(spec), "--until-end", "--json").stdout)
    assert second["events"] == 100  # resumed after the checkpoint: nothing repeated

    replayed = headrace(home, "replay", str(spec), "--from", "450", "--until-end", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["events"] == 150
    bad_from = headrace(home, "replay", str(spec), "--from", "yesterday")
    assert bad_from.returncode == 1 and "neither an offset nor an ISO-8601" in bad_from.stderr


def test_sigterm_drains_commits_and_exits_zero(home: Path, tmp_path: Path) -> None:
    write_events(tmp_path / "events.jsonl", 0, 300)
    spec = pipeline(tmp_path, follow=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace", "run", str(spec)],
        env=clean_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(lines(tmp_path / "scores.jsonl")) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(lines(tmp_path / "scores.jsonl")) == 300
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10
    assert "SIGTERM: draining" in err and "stopped: 300 events" in out
    (checkpoint,) = (home / "checkpoints").glob("events.jsonl.*.scoring.offset")
    assert json.loads(checkpoint.read_text())["offset"] == 300
    assert not (tmp_path / "events.jsonl.scoring.offset").exists()  # nothing beside the data


def test_until_end_exits_3_when_every_event_was_dead_lettered(home: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(json.dumps({"event_id": f"e{i}", "f0": "x"}) + "\n" for i in range(20))
    )
    spec = pipeline(tmp_path)
    failed = headrace(home, "run", str(spec), "--until-end", "--json")
    assert failed.returncode == 3, failed.stderr
    assert json.loads(failed.stdout)["dead_letters"] == 20  # the summary is still printed
    (message,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert "every event was dead-lettered (20 of 20" in message and "$.f0" in message
    assert len(lines(tmp_path / "dlq.jsonl")) == 20
    # one good event is enough to succeed; an empty run too (nothing to score is no error)
    write_events(events, 20, 1)
    assert headrace(home, "run", str(spec), "--until-end").returncode == 0
    assert headrace(home, "run", str(spec), "--until-end").returncode == 0


def test_a_checkpoint_beside_the_data_from_an_earlier_release_is_resumed(
    home: Path, tmp_path: Path
) -> None:
    write_events(tmp_path / "events.jsonl", 0, 50)
    legacy = tmp_path / "events.jsonl.scoring.offset"
    legacy.write_text(json.dumps({"offset": 40}))
    spec = pipeline(tmp_path)
    first = headrace(home, "run", str(spec), "--until-end", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["events"] == 10  # resumed at 40
    (checkpoint,) = (home / "checkpoints").glob("events.jsonl.*.scoring.offset")
    assert json.loads(checkpoint.read_text())["offset"] == 50
    again = headrace(home, "run", str(spec), "--until-end", "--json")
    assert json.loads(again.stdout)["events"] == 0  # the new checkpoint wins from then on


def test_bad_pipeline_spec_is_one_line(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nmodel: fraud\nsource: {url: 'file://e.jsonl'}\noutputs: []\n")
    result = headrace(home, "run", str(spec))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {spec}: at least one output is required - at `$.outputs`"
    ]


def test_demo_runs_the_whole_story(tmp_path: Path) -> None:
    result = headrace(
        tmp_path, "demo", "--events", "3000", "--home", str(tmp_path / "demo"), "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["release"] == "fraud:1" and summary["events"] == 3000
    sent = sum(summary["malformed_sent"].values())
    assert sent > 0 and summary["dead_letters"] == sent
    assert summary["outputs"] == 3000 - sent
    # the stream drifted at 10% (room for the retrain and rollout after the alarm): the
    # drift alarm came after that point, never before
    drift = summary["drift"]
    assert drift["drift_at"] == 300 and drift["drift_event"] == "tx-00000300"
    alarms = drift["alarms"]
    assert alarms, "no drift alarm after the drift point"
    assert all(int(a["event_id"].removeprefix("tx-")) > drift["drift_at"] for a in alarms)
    assert all("amount" in a["columns"] and a["statistic"] > a["threshold"] for a in alarms)
    assert drift["columns"] == ["amount", "distance_km", "card_present", "tx_last_24h"]
    assert drift["release_tags"]["drift"].endswith(f"(event {alarms[-1]['event_id']})")
    # registration, alias, and per alarm its audit record and the release tag
    assert summary["audit_records"] == 2 + 2 * len(alarms)
    assert drift["calibration_checks"] >= 2000 and drift["calibration_s"] < 10
    # the true labels came back late and were joined to the predictions
    accuracy = summary["accuracy"]
    assert accuracy["labels_sent"] > 2950 and accuracy["joined"] > 2500
    assert 0.5 < accuracy["accuracy"] <= 1.0 and accuracy["window"] == accuracy["joined"]
    # the drift report compares the reference with the drifted traffic, a plot per column
    report = Path(drift["report_file"])
    page = report.read_text()
    assert report.parent == tmp_path / "demo" and "amount" in drift["report_drifted_columns"]
    assert page.count("<svg") >= 5 and "after the drift" in page
    alarms_file = tmp_path / "demo" / "outputs" / "drift-alarms.jsonl"
    assert [json.loads(line)["row"] for line in alarms_file.read_text().splitlines()] == [
        a["row"] for a in alarms
    ]
    assert Path(summary["outputs_file"]).exists()
    # the HTTP server beside the stream answered every OIP request, alone and batched alike
    serving = summary["serving"]
    assert serving["url"].startswith("http://127.0.0.1:") and serving["model"] == "fraud"
    requests = serving["requests"]
    assert [r["rows"] for r in requests] == [1, 1, 1, 1, 1, 200]
    for request in requests:
        assert (request["status"], request["release"], request["error"]) == (200, "fraud:1", "")
        assert request["latency_ms"] > 0
        assert len(request["predictions"]) == len(request["scores"]) == request["rows"]
        assert set(request["predictions"]) <= {"legit", "fraud"}
        assert all(0.0 <= s <= 1.0 for s in request["scores"])
    batch = requests[-1]
    assert [r["scores"][0] for r in requests[:5]] == batch["scores"][:5]
    assert serving["batch_agrees"] is True
