"""S3 (the artifact store) unreachable while a release is registered.

A release is its artifacts plus the registry row naming them; the row is written only
after every artifact was stored. With the S3 server gone before or during the upload,
`register` fails with a one-line error, the registry holds no row pointing at missing
artifacts, and a retry once S3 is back registers the release whole.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.faults import sized
from conftest import LOCALHOST, S3_TEST_ENV, free_port, start_process, wait_for_port
from support.models import draft_from, write_sklearn_release

pytestmark = [pytest.mark.chaos, pytest.mark.s3]


class MotoServer:
    """A moto S3 server of the test's own on a fixed port, killed and restarted by pid
    (it keeps its buckets in memory: a restart starts empty)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        log = self.directory / f"moto-{self.starts}.log"
        self.proc = start_process(
            [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(self.port)], log=log
        )
        wait_for_port(self.proc, self.port, name="moto S3 server", log=log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.url)


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    pytest.importorskip("moto")
    pytest.importorskip("boto3")
    server = MotoServer(tmp_path)
    monkeypatch.setenv("HEADRACE_S3_ENDPOINT_URL", server.url)
    for key, value in S3_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    try:
        yield server
    finally:
        server.kill()


def s3_registry(root: Path, bucket: str) -> Any:
    """A SQLite registry under `root` whose artifacts live in `bucket` on the server."""
    from headrace.registry import Registry

    return Registry(
        f"sqlite:///{root / 'registry.db'}",
        artifacts=f"s3://{bucket}/artifacts",
        actor="chaos",
        cache_dir=root / "cache",
    )


def no_half_release_then_a_retry_succeeds(
    moto: MotoServer, root: Path, bucket: str, draft: Any, failure: BaseException
) -> None:
    """After the failed `register`: a one-line error naming the fix, no release row; then
    S3 back (empty: moto keeps nothing in memory), the bucket made again: the retry
    registers the release and every artifact verifies on load."""
    from headrace.errors import HeadraceError
    from headrace.inference.loading import load_service

    assert isinstance(failure, HeadraceError), repr(failure)
    assert "\n" not in str(failure) and "s3://" in str(failure), str(failure)
    with s3_registry(root, bucket) as registry:
        assert registry.list_releases() == []  # no row pointing at missing artifacts
    moto.start()
    moto.client().create_bucket(Bucket=bucket)
    with s3_registry(root, bucket) as registry:
        release = registry.register(draft, alias="champion")
        assert [s.version for s in registry.list_releases("fraud")] == [release.version]
        service = load_service(registry, "fraud@champion")  # every artifact checked
        assert service.release == release.ref


def test_s3_gone_before_register_leaves_no_release(moto: MotoServer, tmp_path: Path) -> None:
    """CI and long form alike."""
    bucket = f"chaos-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)
    files = write_sklearn_release(tmp_path / "fraud")
    draft = draft_from(files, tmp_path / "fraud")
    with s3_registry(tmp_path, bucket) as registry:
        moto.kill()
        with pytest.raises(Exception) as failed:
            registry.register(draft, alias="champion")
    no_half_release_then_a_retry_succeeds(moto, tmp_path, bucket, draft, failed.value)


def test_s3_killed_mid_upload_leaves_no_release(moto: MotoServer, tmp_path: Path) -> None:
    """S3 killed while the model artifact (uploaded in parts) is half-way. CI: a 24 MB
    model; long: 96 MB."""
    bucket = f"chaos-{uuid.uuid4().hex[:12]}"
    client = moto.client()
    client.create_bucket(Bucket=bucket)
    files = write_sklearn_release(tmp_path / "fraud")
    # A model artifact of tens of MB (ballast the model carries), so its upload takes
    # a while and goes in parts.
    import joblib
    import numpy as np

    model = joblib.load(files.model)
    model.ballast = np.random.default_rng(1).bytes(sized(24, 96) << 20)
    joblib.dump(model, files.model)
    draft = draft_from(files, tmp_path / "fraud")
    failure: list[BaseException] = []

    def register() -> None:
        try:
            with s3_registry(tmp_path, bucket) as registry:
                registry.register(draft, alias="champion")
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    # boto3 uploads files past 8 MB in parts: kill S3 while one is half-way.
    while not client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert thread.is_alive(), "register finished before a multipart upload was seen"
        time.sleep(0.005)
    stored = client.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    moto.kill()
    thread.join(120)
    assert not thread.is_alive() and failure, "register succeeded with S3 killed mid-upload"
    print(f"\nS3 killed mid-upload, {stored} whole object(s) stored: {failure[0]}")
    no_half_release_then_a_retry_succeeds(moto, tmp_path, bucket, draft, failure[0])
