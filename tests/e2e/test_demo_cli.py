"""`headrace demo` as a person reads it in a pipe: whole lines, each alarm and verdict
once, the worker's capacity apart from the producer's pace, the chosen threshold, and
the second act: retrain after the drift, the gate, a shadow, then a canary the running
worker decides on its own, in the summary, the registry, the audit chain and the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson

from support.cli import headrace


def test_demo_tells_the_whole_story_in_a_pipe(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    # 160,000 events rather than the default 120,000: room for the rollout to finish on a
    # busy machine (the retrain and each verdict take wall time while events keep coming)
    result = headrace(tmp_path, "demo", "--events", "160000", "--home", str(home))
    assert result.returncode == 0, result.stderr
    err, out = result.stderr, result.stdout
    # not cut at 80 columns: the streaming line is one line
    assert any(
        line.startswith("3/10 streaming") and "feedback topic" in line for line in err.splitlines()
    )
    # each alarm narrated once, under its own name; no log line repeating it
    assert 1 <= err.count("DRIFT ALARM") == out.count("alarm at event")
    assert "drift alarm on" not in err and "KS statistic" not in err + out
    assert "scaled KS sqrt(nm/(n+m))*D" in err
    # the throughput says whose it is
    assert "capacity " in out and "events/s: 160,000 events in" in out
    assert "at the pace the producer offered them" in out
    # the threshold was chosen on validation rows and is in the release config
    config = (home / "release-1" / "config.yaml").read_text()
    threshold = float(config.split("threshold: ")[1].split()[0])
    assert 0 < threshold < 0.5 and f"P(fraud) >= {threshold:.3f}" in out

    # the second act, narrated as it happens: retrain, gate, shadow verdict, canary verdicts
    for step in ("4/10 retraining", "5/10 validation gate passed", "6/10 shadow rollout 1"):
        assert any(line.startswith(step) for line in err.splitlines()), step
    assert any(line.startswith("7/10 canary rollout 2") for line in err.splitlines())
    assert err.count("SHADOW VERDICT") == 1 and "CANARY VERDICT at step 1 (25%)" in err
    assert "rollout of fraud:" not in err  # the participant's log line: narrated instead
    verdicts = [line for line in err.splitlines() if "VERDICT at step" in line]
    assert all("events per arm: baseline " in line for line in verdicts)
    # the summary: the gate's numbers for both releases, and how the canary ended
    assert re.search(r"^  gate +passed: .* fraud:2 against fraud:1: F1 ", out, re.M)
    canary = re.search(
        r"^  canary +rollout 2 \(steps 25,50,100\) (\w+) at event ([\d,]+)", out, re.M
    )
    assert canary is not None, out
    ended = canary.group(1)
    assert ended in ("promoted", "rolled_back")  # decided by the worker, not the demo

    status = headrace(home, "rollout", "status", "fraud", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["id"] == 2 and document["strategy"] == "canary"
    assert document["state"] == ended
    decisions = [v["decision"] for v in document["verdicts"]]
    assert decisions[-1] == ("promote" if ended == "promoted" else "rollback")
    assert not document["verdicts"][-1]["holder"].startswith("manual")

    # outputs: after a promotion the stream ends on fraud:2, as the summary says
    records = (home / "outputs" / "fraud-scores.jsonl").read_bytes().splitlines()
    last = orjson.loads(records[-1])["release"]
    if ended == "promoted":
        assert last == "fraud:2" and "champion now fraud:2" in out
        assert re.search(r"the last [\d,]+ outputs by fraud:2", out)
    else:
        assert last == "fraud:1" and "champion now fraud:1" in out
    # the shadow never wrote to the outputs: its scores are in their own file
    assert (home / "outputs" / "shadow-scores.jsonl").stat().st_size > 0

    # the audit chain verifies and holds the rollout's verdicts; the report shows them
    verified = headrace(home, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    log = json.loads(headrace(home, "audit", "log", "--json").stdout)
    actions = [record["action"] for record in log]
    assert actions.count("rollout.start") == 2 and "rollout.verdict" in actions
    assert f"audit chain   {len(log)} records, verified" in out
    report = (home / "drift-report.html").read_text(encoding="utf-8")
    assert '<section id="rollout">' in report and "Canary rollout 2" in report
    assert report.index('<section id="rollout">') < report.index("</html>")

    # registered as `headrace register` does: the model's own signature recorded
    shown = headrace(home, "releases", "show", "fraud:2", "--json")
    assert shown.returncode == 0, shown.stderr
    signature = json.loads(shown.stdout)["manifest"]["signature"]
    assert [i["name"] for i in signature["inputs"]]


def test_a_short_demo_says_what_its_budget_did_not_reach(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    result = headrace(tmp_path, "demo", "--events", "3000", "--home", str(home), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["capacity_per_s"] > 0 and summary["busy_s"] > 0
    config = (home / "release-1" / "config.yaml").read_text()
    threshold = float(config.split("threshold: ")[1].split()[0])
    assert summary["threshold"] == threshold and summary["validation"]["recall"] > 0.1
    rollout = summary["rollout"]
    assert rollout["phases"] == [] and rollout["release"] == ""
    assert "--events" in rollout["outcome"] and rollout["champion"] == "fraud:1"
    assert summary["outputs_by_release"] == {"fraud:1": summary["outputs"]}
