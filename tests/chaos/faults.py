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
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from conftest import (
    LOCALHOST,
    free_port,
    port_open,
    service_unavailable,
    start_process,
    stop_process,
    wait_for_port,
)
from support.kafka import Producer, produce

LONG_ENV = "HEADRACE_CHAOS_LONG"
LONG = os.environ.get(LONG_ENV) == "1"

_T = TypeVar("_T")


def sized(ci: _T, long: _T) -> _T:
    """The CI size of a test, or its long size under ``HEADRACE_CHAOS_LONG=1``."""
    return long if LONG else ci


# --- Redis of our own -----------------------------------------------------------------


class RedisServer:
    """A redis-server on a free port, its data kept on disk (AOF, fsync per write) so a
    SIGKILL and a restart lose nothing it acknowledged; killed and restarted by pid."""

    def __init__(self, directory: Path, *, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_unavailable("redis-server", "PATH", "apt-get install redis-server")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}{LOCALHOST}:{self.port}/0"
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
                    *(["--requirepass", self.password] if self.password else []),
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


# --- PostgreSQL of our own --------------------------------------------------------------


class PostgresServer:
    """A PostgreSQL cluster of the test's own (initdb into a temp dir, trust auth) on a
    free port, run as the ``postgres`` user; stopped and started again by its pid."""

    def __init__(self) -> None:
        import glob
        import pwd
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            service_unavailable(
                "PostgreSQL binaries", "/usr/lib/postgresql/*/bin", "apt-get install postgresql"
            )
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        # The cluster belongs to `postgres` (initdb refuses root): outside root's 0700 tmp.
        self.root = Path(tempfile.mkdtemp(prefix="headrace-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        user = pwd.getpwnam("postgres")
        os.chown(self.root, user.pw_uid, user.pw_gid)
        self._as_postgres(
            [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
        )
        self.url = f"postgresql://postgres@{LOCALHOST}:{self.port}/postgres"
        self.start()

    def _as_postgres(self, command: list[str]) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            capture_output=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            pytest.fail(f"{command[0]} failed: {done.stdout.decode()} {done.stderr.decode()}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses={LOCALHOST} -c fsync=off"
        self._as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "start",
            ]
        )

    @property
    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def stop(self, *, sig: int = signal.SIGINT) -> None:
        """Stop the server by its pid (SIGINT: fast shutdown, clients cut off)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = self.pid
        os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --- a Kafka broker that survives a restart ---------------------------------------------


class DurableTansu:
    """A Tansu broker of the test's own keeping its data in S3 (a moto server of its
    own), so a SIGKILL and a restart on the same port lose nothing it acknowledged (the
    default memory storage would lose every topic)."""

    def __init__(self, binary: str, directory: Path) -> None:
        import boto3

        self.binary = binary
        self.directory = directory
        moto_port = free_port()
        self.moto = start_process(
            [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(moto_port)],
            log=directory / "moto.log",
        )
        wait_for_port(self.moto, moto_port, name="moto S3 server", log=directory / "moto.log")
        endpoint = f"http://{LOCALHOST}:{moto_port}"
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", **credentials
        )
        client.create_bucket(Bucket="tansu")
        client.close()
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if k not in {"SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "STORAGE_ENGINE"}
                and not k.startswith("AWS_")
            },
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
        self.port = free_port()
        self.bootstrap = f"{LOCALHOST}:{self.port}"
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        url = f"tcp://{LOCALHOST}:{self.port}"
        log = self.directory / f"tansu-{self.starts}.log"
        self.proc = start_process(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "s3://tansu/",
            ],
            log=log,
            env=self.env,
        )
        wait_for_port(self.proc, self.port, name="durable Tansu broker", log=log)

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        stop_process(self.moto)


class PacedProducer(Producer):
    """A `Producer` whose `start` produces ``(key, value)`` pairs from a thread at `rate` a
    second, in `chunks_per_s` bursts; past `hold_at` events it slows to a trickle
    (`trickle` a second) until `release` is called, then sends the rest at once.

    A test injecting faults at moments it cannot schedule (a rebalance takes as long as
    it takes on a loaded machine) keeps the stream live until its last fault, without a
    stream long enough for the slowest machine. Few bursts with a long `linger_ms` make
    few large batches, which a broker storing each batch as an object (Tansu on S3)
    serves far faster than many small ones.
    """

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 5) -> None:
        super().__init__(bootstrap, topic, linger_ms=linger_ms)
        self._released = threading.Event()

    def release(self) -> None:
        """Send what is left at once."""
        self._released.set()

    def start(
        self,
        items: Sequence[tuple[bytes, bytes]],
        *,
        rate: float,
        chunks_per_s: int = 50,
        hold_at: int | None = None,
        trickle: float = 100.0,
    ) -> None:
        hold = len(items) if hold_at is None else hold_at

        def run() -> None:
            position = 0
            while position < len(items):
                if self._released.is_set():
                    pace, chunk = 0.0, 1_000
                elif position >= hold:
                    pace, chunk = trickle, max(1, int(trickle / 10))
                else:
                    pace, chunk = rate, max(1, int(rate / chunks_per_s))
                for key, value in items[position : position + chunk]:
                    produce(self._producer, self.topic, key, value)
                    self.produced += 1
                position += chunk
                self._producer.poll(0)
                if pace:
                    self._released.wait(chunk / pace)
            if self._producer.flush(120):
                self.failures.append("unacknowledged after 120 s")

        self._thread = threading.Thread(target=run, name="chaos-producer", daemon=True)
        self._thread.start()
