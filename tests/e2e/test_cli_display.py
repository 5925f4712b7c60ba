"""What a person reads: aligned values instead of Python reprs, help without empty
defaults or ``{path}``, and no registry created by a command that only reads one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from support.cli import Run, make_runner, register
from support.models import ModelFiles, write_sklearn_release


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, ModelFiles]:
    """fraud:1, and fraud:2 with f0's min raised to 0, no config and a better metric."""
    root = tmp_path_factory.mktemp("display")
    files = write_sklearn_release(root / "model")
    run = make_runner(root / "home", root)
    register(run, files, "--alias", "champion")
    schema = yaml.safe_load(files.schema.read_text())
    schema["fields"][0]["min"] = 0
    (root / "schema2.yaml").write_text(yaml.safe_dump(schema))
    (root / "metrics2.json").write_text('{"accuracy": 0.99}')
    run(
        "register", str(files.model), "--name", "fraud", "--schema", str(root / "schema2.yaml"),
        "--data", str(files.data), "--metrics", str(root / "metrics2.json"),
    )  # fmt: skip
    return run, files


def _no_repr(text: str) -> None:
    for repr_mark in ("{'", "['", "None", "':"):
        assert repr_mark not in text, text


def test_diff_show_and_audit_log_print_values(two: tuple[Run, ModelFiles]) -> None:
    run, _ = two
    diff = run("releases", "diff", "fraud:1", "fraud:2").stdout
    _no_repr(diff)
    lines = [line.split() for line in diff.splitlines()]
    assert lines[0] == ["part", "what", "fraud:1", "fraud:2"]
    assert ["schema", "f0.min", "-100", "0"] in lines
    assert ["config", "threshold", "0.5", "-"] in lines
    assert ["features", "unchanged"] in lines
    metric = next(line for line in lines if line[:2] == ["metrics", "accuracy"])
    assert metric[3] == "0.99" and metric[4].startswith("(+")
    # one column start per header cell: the rows are aligned under it
    header = diff.splitlines()[0]
    assert all(line[header.index("what")] != " " for line in diff.splitlines()[1:])
    machine = json.loads(run("releases", "diff", "fraud:1", "fraud:2", "--json").stdout)
    assert machine["schema"]["changed"]["f0"]["min"] == [-100, 0]

    show = run("releases", "show", "fraud:1").stdout
    _no_repr(show)
    assert "config       threshold=0.5, labels=[legit, fraud]" in show
    log = run("audit", "log").stdout
    _no_repr(log)
    assert all(len(line) > 80 for line in log.splitlines()[1:3])  # not wrapped in a pipe
    assert "reason=registered, to=1" in log


def test_help_has_defaults_and_plain_usage(two: tuple[Run, ModelFiles]) -> None:
    run, _ = two
    wide = {"COLUMNS": "200"}
    serve = run("serve", "--help", env=wide).stdout
    assert "Listen address [config, 127.0.0.1]." in serve and "HTTP port [config, 8080]." in serve
    assert "Usage: headrace serve [OPTIONS] [CONFIG]" in serve
    for args, usage in [
        (["releases", "diff"], "REF_A REF_B"),
        (["register"], "PATH"),
        (["alias", "set"], "NAME ALIAS VERSION"),
    ]:
        text = run(*args, "--help", env=wide).stdout
        assert f"[OPTIONS] {usage}" in text, text
        assert "{" not in text.split("\n\n")[0] + text.splitlines()[1]


def test_reading_a_missing_registry_says_where_it_looked(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    run = make_runner(home, tmp_path)
    for args in (
        ["releases", "list"],
        ["releases", "show", "fraud:1"],
        ["audit", "log"],
        ["alias", "history", "fraud"],
        ["rollback", "fraud"],
    ):
        result = run(*args, ok=False)
        assert result.returncode == 1
        assert f"No registry at 'sqlite:///{home / 'registry.db'}'" in result.stderr
        assert "HEADRACE_REGISTRY" in result.stderr
    source = tmp_path / "in.csv"
    source.write_text("f0\n1\n")
    assert run("predict", "fraud", "--input", str(source), ok=False).returncode == 1
    assert not home.exists()  # nothing created by reading
    pointed = run(
        "releases", "list", env={"HEADRACE_REGISTRY": f"sqlite:///{tmp_path}/r.db"}, ok=False
    )
    assert "from --registry or HEADRACE_REGISTRY" in pointed.stderr
