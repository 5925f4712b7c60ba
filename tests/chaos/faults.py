"""Helpers of the fault suite: sizes, the worker harness, a Redis of a test's own, RSS.

Every test in `tests/chaos` runs in two sizes: the CI form (the default, seconds) and the
long form (``HEADRACE_CHAOS_LONG=1``, minutes), which is what `docs/guarantees.md`
quotes. A test documents both sizes in its docstring and prints its figures (``pytest
-s`` shows them).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from conftest import LOCALHOST, free_port, port_open, service_unavailable, stop_process
from support.kafka import Producer, TopicReader, WorkerProcess

LONG_ENV = "HEADRACE_CHAOS_LONG"
LONG = os.environ.get(LONG_ENV) == "1"

_T = TypeVar("_T")


def sized(ci: _T, long: _T) -> _T:
    """The CI size of a test, or its long size under ``HEADRACE_CHAOS_LONG=1``."""
    return long if LONG else ci


# --- the release and the workers -------------------------------------------------------


class Release:
    """The registered fraud release and the home its workers read it from."""

    def __init__(self, home: Path, ref: str, digest: str) -> None:
        self.home, self.ref, self.digest = home, ref, digest


class Harness:
    """Starts workers and opens clients for one test; stops and closes them all after."""

    def __init__(self, release: Release, directory: Path, *, partitions: int) -> None:
        self.release = release
        self.directory = directory
        self.partitions = partitions
        self.workers: list[WorkerProcess] = []
        self._clients: list[Producer | TopicReader] = []

    def worker(self, spec: Path, *, label: str) -> WorkerProcess:
        worker = WorkerProcess(spec, home=self.release.home, log_dir=self.directory, label=label)
        self.workers.append(worker)
        return worker

    def producer(self, bootstrap: str, topic: str) -> Producer:
        producer = Producer(bootstrap, topic)
        self._clients.append(producer)
        return producer

    def reader(self, bootstrap: str, topic: str) -> TopicReader:
        reader = TopicReader(bootstrap, topic, partitions=self.partitions)
        self._clients.append(reader)
        return reader

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for client in self._clients:
            client.close()


# --- Redis of our own -----------------------------------------------------------------


class RedisServer:
    """A redis-server on a free port, its data kept on disk (AOF, fsync per write) so a
    SIGKILL and a restart lose nothing it acknowledged; killed and restarted by pid."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_unavailable("redis-server", "PATH", "apt-get install redis-server")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://{LOCALHOST}:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    LOCALHOST,
                    "--port",
                    str(self.port),
                    "--dir",
                    str(self.directory),
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while not port_open(LOCALHOST, self.port, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server on {self.port} did not start: {log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def rss_kib(pid: int) -> int:
    """Resident set size of process `pid` in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class IdTracker:
    """The event ids seen so far on an output topic, parsed as records arrive."""

    def __init__(self, reader: TopicReader) -> None:
        self.reader = reader
        self.ids: set[str] = set()
        self._parsed = 0

    def count(self) -> int:
        records = self.reader.records
        for record in records[self._parsed :]:
            self.ids.add(record.json()["event_id"])
        self._parsed = len(records)
        return len(self.ids)

    def at_least(self, count: int) -> Callable[[], bool]:
        """A condition for `TopicReader.wait_for`: `count` distinct events have outputs."""
        return lambda: self.count() >= count
