"""The payload samples' disk full under a running worker.

Samples are for people, not for the pipeline: a full disk must not stop or slow
scoring, and the loss must be reported, in the log and as a metric an alert can watch.
The samples directory is a 64 KiB tmpfs (``mount -t tmpfs -o size=64k``, as root); where
mounting is not permitted it is a path under ``/dev/full`` (ENOTDIR on every write), which
fails every write the same way a full disk does, and the test says so.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from chaos.faults import sized
from conftest import free_port
from support.kafka import (
    IdTracker,
    Producer,
    Release,
    TopicReader,
    WorkerProcess,
    create_topic,
    demo_events,
    write_pipeline,
)

pytestmark = [pytest.mark.chaos, pytest.mark.kafka]


@dataclass(frozen=True)
class Outcome:
    """What one run with a full samples disk left behind."""

    events: int
    stats: dict[str, object]
    log: str
    metrics: str
    how: str


@pytest.fixture(scope="module")
def full_disk_run(
    kafka_broker: str, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    """One worker scoring with every event sampled into a full samples directory.

    CI: 20k events; long (``HEADRACE_CHAOS_LONG=1``): 200k.
    """
    tmp = tmp_path_factory.mktemp("samples-full")
    mount = tmp / "samples"
    mount.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    directory = mount if mounted else Path("/dev/full/samples")
    how = "a 64 KiB tmpfs" if mounted else "a path under /dev/full (mount not permitted)"
    try:
        count = sized(20_000, 200_000)
        events = demo_events(count, seed=41, malformed_rate=0.0, prefix="full-")
        source = create_topic(kafka_broker, partitions=4)
        outputs = create_topic(kafka_broker, partitions=4)
        spec = write_pipeline(
            tmp / "pipeline.yaml",
            name=f"chaos-samples-{uuid.uuid4().hex[:8]}",
            bootstrap=kafka_broker,
            source=source,
            outputs=outputs,
            dead_letter=create_topic(kafka_broker, partitions=4),
        )
        document = yaml.safe_load(spec.read_text())
        document["samples"] = {"url": f"file://{directory}", "ratio": 1.0, "roll_s": 1.0}
        spec.write_text(yaml.safe_dump(document, sort_keys=False))
        port = free_port()
        worker = WorkerProcess(
            spec,
            home=release.home,
            log_dir=tmp,
            label="worker",
            env={},
            args=("--metrics-port", str(port)),
        )
        producer = Producer(kafka_broker, source)
        reader = TopicReader(kafka_broker, outputs, partitions=4)
        try:
            producer.send(events.items)
            seen = IdTracker(reader)
            reader.wait_for(
                seen.at_least(count), timeout=120, what="every event", alive=worker.check_alive
            )
            failed = re.compile(r"payload samples: \d+ rows not written")
            assert worker.wait_for_log(failed, timeout=30), worker.tail()
            metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            stats = worker.terminate()
        finally:
            worker.stop()
            producer.close()
            reader.close()
        yield Outcome(count, stats, worker.tail(200_000), metrics, how)
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)


def test_scoring_goes_on_and_the_log_says_samples_were_lost(full_disk_run: Outcome) -> None:
    run = full_disk_run
    assert run.stats["outputs"] == run.events
    lost = [int(n) for n in re.findall(r"payload samples: (\d+) rows not written", run.log)]
    assert lost and ("No space left on device" in run.log or "Not a directory" in run.log)
    print(
        f"\nsamples on {run.how}: {run.events:,} events scored, {sum(lost):,} sample rows "
        f"reported lost in {len(lost)} log lines"
    )


def test_lost_samples_are_a_metric(full_disk_run: Outcome) -> None:
    lines = [
        line
        for line in full_disk_run.metrics.splitlines()
        if "sample" in line and not line.startswith("#") and re.search(r"fail|drop|lost", line)
    ]
    assert lines and any(float(line.rsplit(" ", 1)[1]) > 0 for line in lines), lines
    failed = [line for line in lines if line.startswith("headrace_samples_lost_total{")]
    assert any('reason="failed"' in line and float(line.rsplit(" ", 1)[1]) > 0 for line in failed)
