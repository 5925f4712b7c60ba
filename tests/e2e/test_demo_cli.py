"""`headrace demo` as a person reads it in a pipe: whole lines, each alarm once, the
worker's capacity apart from the producer's pace, the chosen threshold."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import headrace


def test_demo_text_in_a_pipe(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    result = headrace(tmp_path, "demo", "--events", "3000", "--home", str(home))
    assert result.returncode == 0, result.stderr
    err, out = result.stderr, result.stdout
    # not cut at 80 columns: the streaming line is one line
    assert any(
        line.startswith("3/6 streaming") and "feedback topic" in line for line in err.splitlines()
    )
    # each alarm narrated once, under its own name; no log line repeating it
    assert 1 <= err.count("DRIFT ALARM") == out.count("alarm at event")
    assert "drift alarm on" not in err and "KS statistic" not in err + out
    assert "scaled KS sqrt(nm/(n+m))*D" in err
    # the throughput says whose it is
    assert "capacity " in out and "events/s: 3,000 events in" in out
    assert "at the pace the producer offered them" in out
    # the threshold was chosen on validation rows and is in the release config
    config = (home / "release-1" / "config.yaml").read_text()
    threshold = float(config.split("threshold: ")[1].split()[0])
    assert 0 < threshold < 0.5 and f"P(fraud) >= {threshold:.3f}" in out
    summary = json.loads(
        headrace(tmp_path, "demo", "--events", "3000", "--home", str(home), "--json").stdout
    )
    assert summary["capacity_per_s"] > 0 and summary["busy_s"] > 0
    assert summary["threshold"] == threshold and summary["validation"]["recall"] > 0.1
    # registered as `headrace register` does: the model's own signature recorded
    shown = headrace(home, "releases", "show", "fraud:1", "--json")
    assert shown.returncode == 0, shown.stderr
    signature = json.loads(shown.stdout)["manifest"]["signature"]
    assert [i["name"] for i in signature["inputs"]]
