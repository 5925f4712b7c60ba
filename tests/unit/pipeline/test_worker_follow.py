"""A running worker follows its alias: `headrace rollback` or a promotion reaches it
between batches, without a lost or failed event, and drift then watches the new release.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from headrace.pipeline.build import build_worker
from headrace.pipeline.spec import pipeline_spec_from_dict
from headrace.registry import Registry
from headrace.streams.base import OutRecord
from headrace.streams.memory import broker
from support.models import N_FEATURES, draft_from, local_registry, synthetic, write_sklearn_release


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    with local_registry(tmp_path, actor="tester") as opened:
        first = write_sklearn_release(tmp_path / "m1", seed=7)
        opened.register(draft_from(first, tmp_path / "d1"), alias="champion")
        second = write_sklearn_release(tmp_path / "m2", seed=8, c=0.5)
        opened.register(draft_from(second, tmp_path / "d2"))
        yield opened


def events(start: int, count: int) -> list[OutRecord]:
    x, _ = synthetic(count, seed=start)
    return [
        OutRecord(
            value=orjson.dumps(
                {
                    "event_id": f"e{start + i}",
                    **{f"f{j}": float(x[i, j]) for j in range(N_FEATURES)},
                }
            )
        )
        for i in range(count)
    ]


def test_an_alias_move_reaches_a_running_worker_and_its_drift_watch(
    registry: Registry, tmp_path: Path
) -> None:
    name = f"follow-{uuid.uuid4().hex[:8]}"
    memory = broker(name)
    memory.create_topic("events", partitions=2)
    spec = pipeline_spec_from_dict(
        {
            "name": "scoring",
            "model": "fraud@champion",
            "source": {"url": f"memory://{name}/events", "group": "scoring"},
            "outputs": [{"url": f"memory://{name}/scores"}],
            "dead_letter": {"url": f"memory://{name}/dlq"},
            "id_field": "event_id",
            "batch": {"max_size": 64, "max_wait_ms": 1},
            "rollout": {"poll_s": 0.05},
            "drift": {"window": 200, "stride": 100, "calibration_checks": 500},
        }
    )
    worker = build_worker(spec, registry=registry, home=tmp_path / "home")
    memory.append("events", events(0, 1000))
    stop = threading.Event()
    done = threading.Thread(target=worker.run, kwargs={"stop": stop}, daemon=True)
    done.start()

    def scored() -> int:
        return len(memory.messages("scores"))

    deadline = time.monotonic() + 30
    while scored() < 1000 and time.monotonic() < deadline:
        time.sleep(0.02)
    moved_at = time.monotonic()
    registry.set_alias("fraud", "champion", 2, force=True, reason="test: promote by hand")
    while worker.follower is not None and worker.follower.switches == 0:
        assert time.monotonic() - moved_at < 10, "the worker never noticed the alias move"
        time.sleep(0.02)
    # the new release's drift watch is built in the background (calibration): feed
    # events until it took over, then a thousand more for it to test
    produced = 1000

    def watched() -> str | None:
        monitors = worker.monitors
        return None if monitors is None or monitors.drift is None else monitors.drift.release

    while watched() != "fraud:2":
        assert time.monotonic() - moved_at < 30, "drift never followed the new release"
        memory.append("events", events(produced, 100))
        produced += 100
        time.sleep(0.05)
    memory.append("events", events(produced, 1000))
    produced += 1000
    while scored() < produced and time.monotonic() - moved_at < 60:
        time.sleep(0.02)
    stop.set()
    done.join(timeout=30)
    assert not done.is_alive()

    outputs = [orjson.loads(m.value) for m in memory.messages("scores")]
    ids = sorted(int(o["event_id"][1:]) for o in outputs)
    assert ids == list(range(produced))  # every event once: none lost or failed in the swap
    assert not memory.messages("dlq")
    releases = [o["release"] for o in outputs]
    assert set(releases[:1000]) == {"fraud:1"}
    assert set(releases[1000:]) >= {"fraud:2"}
    assert {o["release"] for o in outputs if int(o["event_id"][1:]) >= 1000} == {"fraud:2"}
    # drift followed: it watches fraud:2 and tested its rows against fraud:2's reference
    assert worker.monitors is not None and worker.monitors.drift is not None
    assert worker.monitors.drift.release == "fraud:2"
    assert worker.monitors.drift.monitor.rows > 0
