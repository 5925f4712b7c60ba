"""`headrace ...` in a subprocess, as a user runs it, for the tests that drive the CLI.

One copy of the runner the e2e, integration and chaos tests used to repeat: the child
gets the caller's environment without its ``HEADRACE_`` settings (a developer's own
registry or key must not leak into a test), a home of the test's own, and its output
captured as text, so a test can read stdout and stderr the way a person would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from support.models import ModelFiles

Run = Callable[..., subprocess.CompletedProcess[str]]

COMMAND = (sys.executable, "-m", "headrace")
"""How a test starts the CLI: the interpreter running the tests, so the tree under test."""

TIMEOUT_S = 180.0
"""A guard against a hung child only; nothing is asserted about how long a command takes."""


def clean_env(
    home: Path,
    *,
    actor: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The caller's environment less every ``HEADRACE_`` name (``HEADRACE_REQUIRE_SERVICES``
    too: it is the test harness's switch, which the CLI never reads), with ``HEADRACE_HOME``
    set to `home`, ``HEADRACE_ACTOR`` to `actor` when given, then `extra`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    environment["HEADRACE_HOME"] = str(home)
    if actor is not None:
        environment["HEADRACE_ACTOR"] = actor
    environment.update(extra or {})
    return environment


def run_headrace(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``headrace *args`` with exactly `env`, its output captured as text; never raises on
    a non-zero exit (the tests assert on the code)."""
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=cwd,
        timeout=timeout,
    )


def headrace(
    home: Path, *args: str, cwd: Path | None = None, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``headrace *args`` with `home` as its home and no other ``HEADRACE_`` setting."""
    return run_headrace(*args, env=clean_env(home), cwd=cwd, timeout=timeout)


def make_runner(
    home: Path,
    cwd: Path,
    *,
    actor: str = "e2e@test",
    ok: bool = True,
) -> Run:
    """A `Run` calling ``headrace ...`` with its own `home` in `cwd` as `actor`.

    The runner takes ``env=`` (extra variables for one call) and ``ok=`` (raise unless the
    exit code is 0; the default is this function's `ok`).
    """
    check = ok

    def invoke(
        *args: str, env: dict[str, str] | None = None, ok: bool = check
    ) -> subprocess.CompletedProcess[str]:
        environment = clean_env(home, actor=actor, extra=env)
        result = run_headrace(*args, env=environment, cwd=cwd)
        if ok and result.returncode != 0:
            raise AssertionError(f"headrace {' '.join(args)} failed:\n{result.stderr}")
        return result

    return invoke


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    """The command failed with exit 1 and one ``error: ...`` line holding every one of `parts`."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def register(
    run: Run, files: ModelFiles, *extra: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """``headrace register`` of `files` as ``fraud`` with schema, data, metrics and config,
    then `extra` (``--alias champion``...)."""
    return run(
        "register",
        str(files.model),
        "--name",
        "fraud",
        "--schema",
        str(files.schema),
        "--data",
        str(files.data),
        "--metrics",
        str(files.metrics),
        "--config",
        str(files.config),
        *extra,
        ok=ok,
    )
