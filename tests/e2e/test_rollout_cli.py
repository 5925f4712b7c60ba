"""``headrace rollout`` end to end: real processes, a real SQLite registry, real models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.cli import Run, assert_one_line_error, make_runner, register
from support.models import write_sklearn_release


def two_releases(root: Path) -> Run:
    """A registry with fraud:1 (champion) and fraud:2 (retrained with another seed)."""
    runner = make_runner(root / "home", root)
    register(runner, write_sklearn_release(root / "a", seed=7), "--alias", "champion")
    register(runner, write_sklearn_release(root / "b", seed=8))
    return runner


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return two_releases(tmp_path)


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`two_releases` for the tests that start nothing (every start they try fails)."""
    return two_releases(tmp_path_factory.mktemp("untouched"))


def status(run: Run) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(run("rollout", "status", "fraud", "--json").stdout)
    return document


def champion(run: Run) -> int:
    listed = json.loads(run("releases", "list", "fraud", "--json").stdout)
    return next(r["version"] for r in listed if "champion" in r["aliases"])


def test_start_status_promote(run: Run) -> None:
    started = run("rollout", "start", "fraud", "--candidate", "2", "--strategy", "canary")
    assert "rollout 1 started: candidate 2 against baseline 1 (canary, steps 5,25,50,100" in (
        started.stdout
    )
    document = status(run)
    assert {k: document[k] for k in ("state", "strategy", "baseline", "candidate", "step")} == {
        "state": "running",
        "strategy": "canary",
        "baseline": 1,
        "candidate": 2,
        "step": 0,
    }
    assert document["weight"] == 5.0
    for arm in ("baseline", "candidate"):
        assert document["arms"][arm]["events"] == 0
        assert set(document["arms"][arm]) >= {
            "events",
            "errors",
            "latency_p50_ms",
            "latency_p99_ms",
            "mean_score",
        }
    assert document["verdicts"] == []
    assert document["history"] == {"at": [], "step": [], "weight": [], "decision": []}
    assert len(document["plan"]["score_edges"]) >= 1 and document["plan"]["salt"]
    people = run("rollout", "status", "fraud").stdout
    assert "running" in people and "fraud:2" in people

    again = run("rollout", "start", "fraud", "--candidate", "2", "--strategy", "canary", ok=False)
    assert_one_line_error(again, "Rollout 1 of 'fraud'", "headrace rollout abort fraud")

    promoted = run("rollout", "promote", "fraud")
    assert "promoted; champion -> 2" in promoted.stdout
    assert champion(run) == 2
    document = status(run)
    assert document["state"] == "promoted" and document["ended_at"]
    assert [v["decision"] for v in document["verdicts"]] == ["promote"]
    assert document["history"]["decision"] == ["promote"]
    assert "audit chain ok" in run("audit", "verify").stdout
    log = run("audit", "log", "--json").stdout
    assert '"rollout.start"' in log and '"rollout.promote"' in log


def test_an_incompatible_candidate_is_refused_and_recorded(run: Run, tmp_path: Path) -> None:
    features = tmp_path / "features.yaml"
    features.write_text("definitions:\n  user_7d:\n    window: 7d\n")
    register(run, write_sklearn_release(tmp_path / "c", seed=9), "--features", str(features))
    refused = run("rollout", "start", "fraud", "--candidate", "3", "--strategy", "shadow", ok=False)
    assert_one_line_error(refused, "refused", "user_7d")
    document = status(run)
    assert document["state"] == "refused" and "user_7d" in document["reason"]
    assert champion(run) == 1
    # a refusal blocks nothing: a compatible candidate starts next
    run("rollout", "start", "fraud", "--candidate", "2", "--strategy", "shadow")
    assert status(run)["state"] == "running"
    assert "audit chain ok" in run("audit", "verify").stdout


def test_abort_keeps_the_champion(run: Run) -> None:
    run("rollout", "start", "fraud", "--candidate", "2", "--strategy", "ab", "--key-field", "f0")
    document = status(run)
    assert (document["weight"], document["plan"]["key_field"]) == (50.0, "f0")
    aborted = run("rollout", "abort", "fraud", "--reason", "wrong day")
    assert "aborted; champion stays at 1" in aborted.stdout
    document = status(run)
    assert (document["state"], document["reason"]) == ("aborted", "wrong day")
    assert champion(run) == 1
    assert_one_line_error(run("rollout", "abort", "fraud", ok=False), "No running rollout")
    assert_one_line_error(run("rollout", "promote", "fraud", ok=False), "No running rollout")


@pytest.mark.parametrize(
    ("args", "code", "parts"),
    [
        (("--strategy", "blue"), 2, ("--strategy",)),
        (("--strategy", "canary", "--steps", "five"), 2, ("--steps",)),
        (("--strategy", "canary", "--min-samples", "0"), 2, ("--min-samples",)),
        (("--strategy", "canary", "--steps", "50,5"), 1, ("not ascending",)),
        (("--strategy", "shadow", "--steps", "10,20"), 1, ("takes one weight",)),
        (("--strategy", "canary", "--steps", "0,150"), 1, ("Invalid step 0",)),
        (("--strategy", "canary", "--alpha", "0.7"), 1, ("Invalid alpha 0.7",)),
        (("--strategy", "canary", "--key-field", "user"), 1, ("Key field 'user'",)),
        (
            ("--strategy", "canary", "--min-samples", "10", "--max-samples", "5"),
            1,
            ("--max-samples 5 is below --min-samples 10",),
        ),
        (("--strategy", "canary", "--latency-tolerance", "0"), 1, ("--latency-tolerance",)),
    ],
)
def test_bad_arguments(
    untouched: Run, args: tuple[str, ...], code: int, parts: tuple[str, ...]
) -> None:
    run = untouched
    result = run("rollout", "start", "fraud", "--candidate", "2", *args, ok=False)
    if code == 1:
        assert_one_line_error(result, *parts)
    else:
        assert result.returncode == 2, result.stderr
        assert all(part in result.stderr for part in parts), result.stderr


def test_status_of_a_name_without_rollouts(untouched: Run) -> None:
    run = untouched
    assert_one_line_error(run("rollout", "status", "fraud", ok=False), "'fraud' has no rollout")
    assert_one_line_error(
        run("rollout", "start", "fraud", "--candidate", "9", "--strategy", "canary", ok=False),
        "fraud:9",
    )
