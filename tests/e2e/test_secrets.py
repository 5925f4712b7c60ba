"""No secret in any output: one planted in every config path, every printing command run.

A distinct secret sits in each place a credential can live (registry URL, artifact store
URL, a pipeline's source, outputs, dead-letter, dedupe and feedback URLs, a client option,
an environment variable, the serve config's token and key password); then the commands
that print those places run against services that are not there (doctor, releases list,
run --until-end, serve with a bad config). Every stdout and stderr, logs included, is
searched for every secret. Before the fix a password holding ``/`` came out whole from
``releases list`` and ``doctor``, and ``--until-end`` printed the source URL with its
password.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

from support.cli import Run, make_runner
from support.models import ModelFiles, write_sklearn_release

SECRETS = {
    "registry": "Reg5ecret/Pw",  # the "/" defeated urllib's parse
    "artifacts": "Art5ecretKey",
    "source": "Src5ecret?x#y",
    "output": "Out5ecretTok",
    "dead_letter": "Dlq5ecret@pw",
    "dedupe": "Ded5ecretPw",
    "feedback": "Fbk5ecretPw",
    "option": "Opt5ecretSasl",
    "env": "Env5ecretFromVar",
    "token": "Tok5ecret-0123456789",
    "key_password": "Key5ecretPass",
}


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """A local registry with fraud@champion, for the commands that load a model first."""
    root = tmp_path_factory.mktemp("secrets")
    files: ModelFiles = write_sklearn_release(root / "model")
    run = make_runner(root / "home", root, ok=False)
    result = run(
        "register",
        str(files.model),
        "--name",
        "fraud",
        "--schema",
        str(files.schema),
        "--alias",
        "champion",
    )
    assert result.returncode == 0, result.stderr
    return run, root


def assert_clean(result: subprocess.CompletedProcess[str], *, command: str) -> None:
    output = result.stdout + result.stderr
    leaked = [name for name, secret in SECRETS.items() if secret in output]
    assert not leaked, f"{command} printed the {leaked} secret(s):\n{output}"
    assert "Traceback" not in output, f"{command}:\n{output}"


def pipeline_yaml(
    root: Path, *, source: str, dedupe: str, output: str = "", dead_letter: str = ""
) -> Path:
    dead = closed_port()
    spec = {
        "name": "leaky",
        "model": "fraud@champion",
        "source": {"url": source, "topic": "in"},
        "outputs": [
            {
                "url": output or f"nats://{SECRETS['output']}@127.0.0.1:{closed_port()}",
                "topic": "out",
            }
        ],
        "dead_letter": {
            "url": f"kafka://127.0.0.1:{dead}",
            "topic": "dlq",
            "options": {"sasl.password": SECRETS["option"]},
        }
        if not dead_letter
        else {"url": dead_letter},
        "dedupe": {"url": dedupe},
        "feedback": {
            "url": f"redis://:{SECRETS['feedback']}@127.0.0.1:{closed_port()}/0",
            "topic": "labels",
        },
    }
    path = root / f"pipeline-{closed_port()}.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_no_command_prints_a_planted_secret(registered: tuple[Run, Path]) -> None:
    run, root = registered
    port = closed_port()
    events = root / "events.jsonl"
    events.write_text('{"event_id": "e1", "f0": 1.0}\n')
    dedupe = f"redis://:{SECRETS['dedupe']}@127.0.0.1:{port}/0"
    env_source = "redis://:${HEADRACE_TEST_SOURCE_PASSWORD}@127.0.0.1:" + f"{port}/0"
    env = {"HEADRACE_TEST_SOURCE_PASSWORD": SECRETS["env"]}
    specs = {
        # a source without an end: the --until-end error names it
        "redis source": pipeline_yaml(
            root, source=f"redis://:{SECRETS['source']}@127.0.0.1:{port}/0", dedupe=dedupe
        ),
        "nats source": pipeline_yaml(
            root, source=f"nats://{SECRETS['source']}@127.0.0.1:{port}", dedupe=dedupe
        ),
        "env source": pipeline_yaml(root, source=env_source, dedupe="memory://"),
        # credentials in a Kafka URL, which the spec refuses (without showing them)
        "kafka userinfo": pipeline_yaml(
            root,
            source=f"file://{events}",
            dedupe="memory://",
            dead_letter=f"kafka://u:{SECRETS['dead_letter']}@127.0.0.1:{port}",
        ),
        # a file source that ends: the unreachable Redis dedupe store is what fails
        "file source": pipeline_yaml(
            root,
            source=f"file://{events}",
            dedupe=dedupe,
            output=f"file://{root / 'out.jsonl'}",
            dead_letter=f"file://{root / 'dlq.jsonl'}",
        ),
    }
    bad_registry = f"postgresql://u:{SECRETS['registry']}@127.0.0.1:{port}/test"
    remote = {
        "HEADRACE_REGISTRY": bad_registry,
        "HEADRACE_ARTIFACTS": f"s3://AKIA:{SECRETS['artifacts']}@bucket/prefix",
        **env,
    }
    results = {
        "releases list": run("releases", "list", env=remote),
        "releases list (bad port)": run(
            "--registry", bad_registry.replace(f":{port}/", ":notaport/"), "releases", "list"
        ),
        "doctor": run("doctor", "--timeout", "1", *map(str, specs.values()), env=remote),
    }
    for label, spec in specs.items():
        results[f"run {label}"] = run("run", str(spec), "--until-end", env=env)
    for label, result in results.items():
        assert result.returncode != 0, f"{label} should fail: {result.stdout}{result.stderr}"
        assert_clean(result, command=label)
    # The failures are the ones meant, not something earlier.
    assert "--until-end needs a source with an end" in results["run redis source"].stderr
    assert "--until-end needs a source with an end" in results["run nats source"].stderr
    assert "Dedupe store" in results["run file source"].stderr
    assert "carries credentials" in results["run kafka userinfo"].stderr


def test_serve_with_a_bad_config_prints_no_secret(registered: tuple[Run, Path]) -> None:
    run, root = registered
    cert, key = root / "cert.pem", root / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    for body in (
        # a valid token, a bad certificate with a key password
        "auth: {inference_token: '${HEADRACE_TEST_TOKEN}'}\n"
        f"tls: {{certfile: '{cert}', keyfile: '{key}', keyfile_password: "
        f"'{SECRETS['key_password']}'}}\n",
        # the token in a field that refuses it (an enum)
        "batching: {mode: '${HEADRACE_TEST_TOKEN}'}\n",
        # a key password where a number belongs
        f"port: '{SECRETS['key_password']}'\n",
    ):
        config = root / "serve.yaml"
        config.write_text(body)
        result = run("serve", str(config), env={"HEADRACE_TEST_TOKEN": SECRETS["token"]})
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
        assert_clean(result, command=f"serve {body!r}")


@pytest.mark.parametrize(
    ("manifest", "what"),
    [
        (b'{"not": "a manifest"', "corrupted"),
        ("TEXT", "stored as text"),
    ],
)
def test_an_unreadable_manifest_row_is_one_line(
    tmp_path: Path, registered: tuple[Run, Path], manifest: bytes | str, what: str
) -> None:
    run, root = registered
    home = tmp_path / "home"
    home.mkdir()
    (home / "registry.db").write_bytes((root / "home" / "registry.db").read_bytes())
    with sqlite3.connect(home / "registry.db") as conn:
        if manifest == "TEXT":  # the same JSON, as a TEXT value instead of a BLOB
            raw = conn.execute("SELECT manifest FROM headrace_releases").fetchone()[0]
            conn.execute("UPDATE headrace_releases SET manifest = ?", (bytes(raw).decode(),))
        else:
            conn.execute("UPDATE headrace_releases SET manifest = ?", (manifest,))
    other = make_runner(home, tmp_path, ok=False)
    result = other("releases", "show", "fraud:1")
    assert "Traceback" not in result.stderr, f"{what}: {result.stderr}"
    if manifest == "TEXT":
        assert result.returncode == 0, result.stderr  # same bytes: it still loads
    else:
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "unreadable manifest" in lines[0], result.stderr
