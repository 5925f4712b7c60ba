"""Defect 8 (issue 10): the code version is read from .git's files, never by running git.

The repositories are made with the real git (the test's own setup, in a safe
environment); the code under test must agree with git without starting it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from headrace.release.bundle import detect_code_version
from support.models import draft_from, write_sklearn_release

_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "core.fsmonitor=false", *args],
        cwd=repo,
        env=_ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('train')\n")
    (root / "models").mkdir()
    (root / "models" / "notes.md").write_text("notes\n")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_hostile_fsmonitor_never_runs_at_register(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "fsmonitor-ran"
    hook = repo / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    _git(repo, "config", "core.fsmonitor", str(hook))
    _git(repo, "config", "core.hooksPath", str(repo))
    files = write_sklearn_release(repo / "models" / "fraud")
    draft = draft_from(files, tmp_path)
    head = _git(repo, "rev-parse", "HEAD")
    # draft_from pins code_version; build one the way `register` does, from the directory.
    assert draft.model_dir is not None
    version = detect_code_version(draft.model_dir)
    assert version is not None and version.startswith(head)
    assert not marker.exists()


def test_clean_dirty_and_untracked(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert detect_code_version(repo / "models") == head
    (repo / "untracked.txt").write_text("new\n")
    assert detect_code_version(repo) == head  # untracked files do not count
    (repo / "train.py").write_text("print('changed')\n")
    assert detect_code_version(repo) == f"{head}-dirty"
    (repo / "train.py").write_text("print('train')\n")  # same bytes again, new mtime
    assert detect_code_version(repo) == head
    (repo / "models" / "notes.md").unlink()
    assert detect_code_version(repo) == f"{head}-dirty"


def test_same_size_edit_is_dirty(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    path = repo / "train.py"
    info = path.stat()
    path.write_text("print('TRAIN')\n")  # same length, restored timestamps
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert detect_code_version(repo) == f"{head}-dirty"


@pytest.mark.parametrize("index_version", ["2", "3", "4"])
def test_index_versions(repo: Path, index_version: str) -> None:
    for i in range(12):  # paths sharing prefixes exercise v4's prefix compression
        (repo / "models" / f"part-{i:02d}.txt").write_text(f"{i}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "more")
    _git(repo, "update-index", "--index-version", index_version)
    head = _git(repo, "rev-parse", "HEAD")
    assert detect_code_version(repo) == head
    (repo / "models" / "part-11.txt").write_text("eleven\n")
    assert detect_code_version(repo) == f"{head}-dirty"


def test_packed_refs_detached_head_and_worktree(repo: Path, tmp_path: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert detect_code_version(repo) == head
    _git(repo, "checkout", "-q", "--detach")
    assert detect_code_version(repo) == head
    _git(repo, "checkout", "-q", "main")
    linked = tmp_path / "linked"
    _git(repo, "worktree", "add", "-q", "-b", "side", str(linked))
    assert (linked / ".git").is_file()
    assert detect_code_version(linked) == head


def test_no_repository_or_garbage(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert detect_code_version(plain) is None
    broken = tmp_path / "broken"
    (broken / ".git").mkdir(parents=True)
    (broken / ".git" / "HEAD").write_text("ref: ../../../../etc/passwd\n")
    assert detect_code_version(broken) is None
    (broken / ".git" / "HEAD").write_bytes(b"\xff\xfe garbage")
    assert detect_code_version(broken) is None
