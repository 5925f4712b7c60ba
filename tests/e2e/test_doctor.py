"""`headrace doctor PIPELINE.yaml` as a process: one line per check, exit 1 on any failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import LOCALHOST
from support.cli import headrace
from support.models import draft_from, local_registry, write_sklearn_release


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with fraud:1 as champion (doctor only reads it)."""
    root = tmp_path_factory.mktemp("doctor")
    files = write_sklearn_release(root / "model")
    home = root / "home"
    with local_registry(home, actor="e2e") as registry:
        registry.register(draft_from(files, root), alias="champion")
    return home


def doctor(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return headrace(home, "doctor", *args, cwd=cwd)


def write_pipeline(directory: Path, *, outputs: str) -> Path:
    (directory / "events.jsonl").write_text('{"event_id": "e1", "f0": 1.0}\n')
    spec = directory / "pipeline.yaml"
    spec.write_text(
        "name: scoring\n"
        "model: fraud@champion\n"
        f"source: {{url: 'file://{directory / 'events.jsonl'}', group: scoring}}\n"
        f"outputs:\n{outputs}"
        f"dead_letter: {{url: 'file://{directory / 'dlq' / 'dead.jsonl'}'}}\n"
    )
    return spec


def test_doctor_probes_each_endpoint_and_fails_on_the_bad_one(
    home: Path, tmp_path: Path, free_tcp_port: int
) -> None:
    bad = f"kafka://{LOCALHOST}:{free_tcp_port}"
    spec = write_pipeline(tmp_path, outputs=f"  - {{url: '{bad}', topic: scores}}\n")
    result = doctor(home, tmp_path, str(spec), "--timeout", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    ok = result.stdout.splitlines()
    assert [line.split()[1] for line in ok] == [
        "registry",
        "artifacts",
        "pipeline",
        "model",
        "source",
        "dead-letter",
        "dedupe",
    ], result.stdout
    assert f"pipeline  {spec}: 'scoring', parsed" in ok[2]
    assert "fraud@champion is fraud:1 (digest " in ok[3]
    assert "readable; checkpoint" in ok[4] and "will be created" in ok[5]
    assert ok[6].startswith("ok    dedupe    memory://")
    failures = result.stderr.strip().splitlines()
    assert len(failures) == 1, result.stderr
    assert failures[0].startswith(f"FAIL  output    {bad} topic 'scores': no Kafka broker at")
    assert "check the broker is running" in failures[0]
    assert not (tmp_path / "dlq").exists()  # probing created nothing


def test_doctor_exits_zero_when_every_endpoint_is_usable(home: Path, tmp_path: Path) -> None:
    spec = write_pipeline(tmp_path, outputs=f"  - {{url: 'file://{tmp_path / 'out.jsonl'}'}}\n")
    result = doctor(home, tmp_path, str(spec))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "ok    output    file://" in result.stdout


def test_doctor_redacts_passwords_of_unreachable_endpoints(
    home: Path, tmp_path: Path, free_tcp_port: int
) -> None:
    url = f"redis://:hunter2@{LOCALHOST}:{free_tcp_port}/0"
    spec = write_pipeline(tmp_path, outputs=f"  - {{url: '{url}', topic: scores}}\n")
    spec.write_text(spec.read_text() + f"dedupe: {{url: '{url}'}}\n")
    result = doctor(home, tmp_path, str(spec), "--timeout", "1")
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr
    failures = result.stderr.strip().splitlines()
    assert [line.split()[1] for line in failures] == ["output", "dedupe"], result.stderr
    assert all(f"redis://:***@{LOCALHOST}:{free_tcp_port}/0" in line for line in failures)


def test_malformed_pipeline_is_one_clear_line(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: scoring\nmodel: [fraud\nsource: {url: 'file:///x.jsonl'}\n")
    missing = tmp_path / "absent.yaml"
    result = doctor(home, tmp_path, str(spec), str(missing))
    assert result.returncode == 1
    assert result.stdout.startswith("ok    registry")  # the other checks still ran
    failures = result.stderr.strip().splitlines()
    assert len(failures) == 2, result.stderr
    assert failures[0].startswith(f"FAIL  pipeline  {spec}: invalid YAML at line ")
    assert failures[1] == (
        f"FAIL  pipeline  Cannot read pipeline spec '{missing}': No such file or directory."
    )


def test_invalid_pipeline_names_the_key(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "invalid.yaml"
    spec.write_text("name: scoring\nmodel: fraud@champion\nsource: {url: 'file:///x.jsonl'}\n")
    result = doctor(home, tmp_path, str(spec))
    assert result.returncode == 1
    failures = result.stderr.strip().splitlines()
    assert len(failures) == 1 and "outputs" in failures[0], result.stderr
