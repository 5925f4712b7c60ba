"""The CLI end to end: real processes, a real SQLite registry and real models."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import Run, assert_one_line_error, make_runner, register
from support.models import ModelFiles, write_sklearn_release


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def run(home: Path, tmp_path: Path) -> Run:
    return make_runner(home, tmp_path)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, ModelFiles]:
    """One registry with fraud:1 as champion, shared by the tests that must not change it."""
    root = tmp_path_factory.mktemp("registered")
    files = write_sklearn_release(root / "model")
    runner = make_runner(root / "home", root)
    register(runner, files, "--alias", "champion")
    return runner, files


@pytest.fixture
def files(tmp_path: Path) -> ModelFiles:
    return write_sklearn_release(tmp_path / "model")


def registry_state(run: Run) -> tuple[str, str]:
    listed = run("releases", "list", "--json").stdout
    log = run("audit", "log", "--json").stdout
    return listed, log


def test_version_and_help_are_light(run: Run) -> None:
    assert run("--version").stdout.strip().startswith("headrace 0.")
    probe = (
        "import sys\n"
        "from headrace.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('sklearn', 'torch', 'lightgbm', 'xgboost', 'onnxruntime',"
        " 'pyarrow', 'sqlalchemy', 'boto3', 'confluent_kafka') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out
    assert "register" in out and "releases" in out


def test_register_show_diff_alias_rollback_predict_audit(
    run: Run, files: ModelFiles, tmp_path: Path
) -> None:
    first = register(run, files, "--alias", "champion")
    ref, digest = first.stdout.split()
    assert ref == "fraud:1" and len(digest) == 64
    second = write_sklearn_release(tmp_path / "model2", seed=8, c=0.01)
    assert register(run, second).stdout.startswith("fraud:2 ")

    listed = json.loads(run("releases", "list", "fraud", "--json").stdout)
    assert [(r["version"], r["aliases"]) for r in listed] == [(1, ["champion"]), (2, [])]
    shown = json.loads(run("releases", "show", "fraud:2", "--json").stdout)
    assert shown["digest"] != digest
    assert shown["manifest"]["parent"] == "fraud:1"
    assert shown["manifest"]["data"]["rows"] == 400
    assert "fraud:1" in run("releases", "show", "fraud@champion").stdout
    diff = json.loads(run("releases", "diff", "fraud:1", "fraud:2", "--json").stdout)
    assert "digest" in diff["model"] and diff["data"]
    assert "accuracy" in diff["metrics"] and diff["schema"] == {}

    assert "1 -> 2" in run("alias", "set", "fraud", "champion", "2", "--reason", "auc").stdout
    assert "2 -> 1" in run("rollback", "fraud", "--reason", "latency").stdout
    history = json.loads(run("alias", "history", "fraud", "--json").stdout)
    assert [h["kind"] for h in history] == ["set", "set", "rollback"]

    # Batch scoring through the inference core, with bad rows kept, not dropped.
    rows = ["f0,f1,f2,f3,f4"] + [",".join(str(v) for v in r) for r in files.features[:50]]
    rows += ["abc,0,0,0,0", "1,2,3,4", "500,0,0,0,0"]
    data = tmp_path / "score.csv"
    data.write_text("\n".join(rows) + "\n")
    out = run("predict", "fraud", "--input", str(data), "--json")
    summary = json.loads(out.stdout)
    assert summary["release"] == "fraud:1"
    assert summary["rows"] == 53 and summary["predicted"] == 50 and summary["rejected"] == 3
    predictions = Path(summary["output"]).read_text().strip().splitlines()
    assert len(predictions) == 51  # header + one row per valid input row
    rejects = [json.loads(line) for line in Path(summary["rejects"]).read_text().splitlines()]
    assert sorted(r["row"] for r in rejects) == [50, 51, 52]
    assert all(r["reason"] for r in rejects)

    verified = run("audit", "verify").stdout
    assert "audit chain ok: 5 records" in verified
    log = json.loads(run("audit", "log", "--json").stdout)
    assert [r["action"] for r in log] == [
        "register",
        "alias.set",
        "register",
        "alias.set",
        "rollback",
    ]
    assert "ok    registry" in run("doctor").stdout


def test_tampered_audit_row_fails_verify(run: Run, files: ModelFiles, home: Path) -> None:
    register(run, files, "--alias", "champion")
    with sqlite3.connect(home / "registry.db") as db:
        db.execute("UPDATE headrace_audit_log SET actor = 'mallory' WHERE seq = 1")
    result = run("audit", "verify", ok=False)
    assert_one_line_error(result, "record #1", "altered")
    doctor = run("doctor", ok=False)
    assert doctor.returncode == 1 and "FAIL  registry" in doctor.stderr


def test_tampered_artifact_fails_predict(
    run: Run, files: ModelFiles, home: Path, tmp_path: Path
) -> None:
    register(run, files, "--alias", "champion")
    blob = next(
        (home / "artifacts" / "sha256").rglob(
            json.loads(run("releases", "show", "fraud:1", "--json").stdout)["manifest"]["model"][
                "files"
            ][0]["sha256"]
        )
    )
    blob.write_bytes(blob.read_bytes()[:-1] + b"x")
    data = tmp_path / "x.csv"
    data.write_text("f0,f1,f2,f3,f4\n0,0,0,0,0\n")
    result = run("predict", "fraud:1", "--input", str(data), ok=False)
    assert_one_line_error(result, "model.pkl", "expected sha256")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("case", "parts"),
    [
        ("missing-model", ["does not exist"]),
        ("unknown-flavor", ["Unknown flavor 'keras'"]),
        ("not-a-model", ["not-a-model.pkl", "sklearn"]),
        ("unknown-type", ["flaot", "$.fields[0].type"]),
        ("duplicate-field", ["duplicate", "f0"]),
        ("bad-name", ["Invalid release name"]),
    ],
)
def test_bad_register_input_leaves_registry_unchanged(
    registered: tuple[Run, ModelFiles], tmp_path: Path, case: str, parts: list[str]
) -> None:
    run, files = registered
    before = registry_state(run)
    args = {
        "model": str(files.model),
        "--name": "fraud",
        "--schema": str(files.schema),
        "--data": str(files.data),
    }
    if case == "missing-model":
        args["model"] = str(tmp_path / "nope.pkl")
    elif case == "unknown-flavor":
        args["--flavor"] = "keras"
    elif case == "not-a-model":
        bogus = tmp_path / "not-a-model.pkl"
        bogus.write_text("just text")
        args["model"] = str(bogus)
    elif case == "unknown-type":
        bad = tmp_path / "schema.yaml"
        bad.write_text("fields:\n  - {name: f0, type: flaot}\n")
        args["--schema"] = str(bad)
    elif case == "duplicate-field":
        bad = tmp_path / "schema.yaml"
        bad.write_text("fields:\n  - {name: f0, type: float}\n  - {name: f0, type: int}\n")
        args["--schema"] = str(bad)
    elif case == "bad-name":
        args["--name"] = "no spaces allowed"
    model = args.pop("model")
    flat = [item for pair in args.items() for item in pair]
    result = run("register", model, *flat, ok=False)
    assert_one_line_error(result, *parts)
    assert registry_state(run) == before


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("ghost", ["ghost@champion", "Known names: fraud"]),
        ("fraud@shadow", ["no alias 'shadow'", "alias set fraud shadow"]),
        ("fraud:7", ["fraud:7", "releases list fraud"]),
        ("fraud:x", ["Invalid release reference"]),
    ],
)
def test_unknown_release_or_alias(
    registered: tuple[Run, ModelFiles], ref: str, parts: list[str]
) -> None:
    run, _ = registered
    assert_one_line_error(run("releases", "show", ref, ok=False), *parts)


def test_unreachable_services_are_one_line(run: Run, files: ModelFiles, home: Path) -> None:
    port = _free_port()
    pg = run(
        "releases",
        "list",
        env={"HEADRACE_REGISTRY": f"postgresql://u:hunter2@127.0.0.1:{port}/db"},
        ok=False,
    )
    assert_one_line_error(pg, "Cannot reach registry", f"127.0.0.1:{port}")
    assert "hunter2" not in pg.stderr
    s3 = run(
        "register",
        str(files.model),
        "--name",
        "fraud",
        "--schema",
        str(files.schema),
        env={
            "HEADRACE_ARTIFACTS": "s3://bucket/prefix",
            "HEADRACE_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        ok=False,
    )
    assert_one_line_error(s3, f"127.0.0.1:{port}")
    # nothing registered: no registry at all, or an empty one
    registry = home / "registry.db"
    assert not registry.exists() or json.loads(run("releases", "list", "--json").stdout) == []


def test_usage_errors_exit_2(run: Run) -> None:
    result = run("register", ok=False)
    assert result.returncode == 2
    assert run("alias", "set", "fraud", "champion", "zero", ok=False).returncode == 2
