"""`headrace register`, `alias set` and `audit checkpoint|verify` on integrity, end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.cli import Run, assert_one_line_error, make_runner
from support.keys import write_ed25519_pair
from support.models import write_sklearn_release

KEY = {"HEADRACE_AUDIT_HMAC_KEY": "e2e-secret-checkpoint-key-0123456789"}


def _register(
    run: Run, model: Path, *extra: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    return run(
        "register",
        str(model / "model.pkl"),
        "--name",
        "fraud",
        "--schema",
        str(model / "schema.yaml"),
        "--data",
        str(model / "train.parquet"),
        *extra,
        ok=ok,
    )


def test_duplicate_unverified_alias_and_checkpoint(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = make_runner(home, tmp_path)
    write_sklearn_release(tmp_path / "m1")
    write_sklearn_release(tmp_path / "m2", seed=8, c=0.05)
    first = _register(run, tmp_path / "m1", "--alias", "champion")
    again = _register(run, tmp_path / "m1")
    assert again.stdout.split()[0] == "fraud:1"
    assert "identical to fraud:1" in again.stderr
    assert first.stdout.split()[1] == again.stdout.split()[1]

    _register(run, tmp_path / "m2", "--no-verify")
    refused = run("alias", "set", "fraud", "champion", "2", ok=False)
    assert_one_line_error(refused, "'fraud:2' skipped verification", "--force --reason")
    run("alias", "set", "fraud", "champion", "2", "--force", "--reason", "checked by hand")

    anchors = tmp_path / "anchors"
    written = run("audit", "checkpoint", "--checkpoints", str(anchors), env=KEY)
    assert written.stdout.startswith("checkpoint #4 head ")
    ok = run("audit", "verify", "--checkpoints", str(anchors), env=KEY)
    assert "4 records" in ok.stdout and "extends checkpoint #4" in ok.stdout
    plain = run("audit", "verify")
    assert "without --checkpoints" in plain.stderr

    database = home / "registry.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(b"")  # an emptied registry file
    failed = run("audit", "verify", "--checkpoints", str(anchors), env=KEY, ok=False)
    assert_one_line_error(failed, "0 records but checkpoint", "saw 4")
    assert KEY["HEADRACE_AUDIT_HMAC_KEY"] not in failed.stderr + failed.stdout


def test_signed_releases_only_when_required(tmp_path: Path) -> None:
    private, public = write_ed25519_pair(tmp_path, "release")
    run = make_runner(tmp_path / "home", tmp_path)
    signed = write_sklearn_release(tmp_path / "m1")
    write_sklearn_release(tmp_path / "m2", seed=8, c=0.05)
    _register(run, tmp_path / "m1", "--sign-key", str(private))
    _register(run, tmp_path / "m2")
    rows = ["f0,f1,f2,f3,f4"] + [",".join(str(v) for v in r) for r in signed.features[:5]]
    data = tmp_path / "score.csv"
    data.write_text("\n".join(rows) + "\n")
    strict = {"HEADRACE_REQUIRE_SIGNED": "1", "HEADRACE_TRUSTED_KEYS": str(public)}
    scored = run(
        "predict", "fraud:1", "--input", str(data), "--output", str(tmp_path / "o.csv"), env=strict
    )
    assert scored.returncode == 0
    refused = run("predict", "fraud:2", "--input", str(data), env=strict, ok=False)
    assert_one_line_error(refused, "'fraud:2' has no signature", "--sign-key")
    run("predict", "fraud:2", "--input", str(data), "--output", str(tmp_path / "o2.csv"))


def test_rollback_to_an_unverified_release_is_refused(tmp_path: Path) -> None:
    run = make_runner(tmp_path / "home", tmp_path)
    write_sklearn_release(tmp_path / "m1")
    write_sklearn_release(tmp_path / "m2", seed=8, c=0.05)
    _register(run, tmp_path / "m1", "--alias", "champion")
    _register(run, tmp_path / "m2", "--no-verify")
    refused = run("rollback", "fraud", "--to", "2", ok=False)
    assert_one_line_error(refused, "'fraud:2' skipped verification")
