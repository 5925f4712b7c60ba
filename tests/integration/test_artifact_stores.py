"""Conformance of every `ArtifactStore`, plus the S3 store's failure modes.

The same suite runs over the local directory store and the S3 store on a moto server, so
the registry may rely on one behaviour whichever store a deployment configures.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from headrace.errors import ArtifactNotFoundError, ArtifactUnavailableError
from headrace.registry.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    blob_key,
    open_artifact_store,
)
from headrace.registry.s3 import S3ArtifactStore

BLOB_SIZE = 3 * 1024 * 1024 + 17  # a few MB, not a multiple of any chunk size


@pytest.fixture(
    params=[
        pytest.param("local", id="local"),
        pytest.param("s3", id="s3", marks=pytest.mark.s3),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """Each implementation, empty, opened through the URL a deployment would configure."""
    if request.param == "local":
        return open_artifact_store(f"file://{tmp_path / 'artifacts'}")
    url: str = request.getfixturevalue("s3_bucket_url")
    return open_artifact_store(url)


def _blob(rng: np.random.Generator, directory: Path, size: int = BLOB_SIZE) -> tuple[Path, str]:
    path = directory / "blob.bin"
    data = rng.bytes(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_store_implements_the_protocol(store: ArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)
    assert store.url


def test_check_passes_on_a_usable_store(store: ArtifactStore) -> None:
    store.check()


def test_put_has_get_round_trip(
    store: ArtifactStore, tmp_path: Path, rng: np.random.Generator
) -> None:
    source, digest = _blob(rng, tmp_path)
    assert not store.has(digest)

    store.put_file(source, digest)

    assert store.has(digest)
    dest = tmp_path / "fetched" / "nested" / "model.bin"
    store.get_file(digest, dest)
    assert dest.read_bytes() == source.read_bytes()


def test_put_is_idempotent(store: ArtifactStore, tmp_path: Path, rng: np.random.Generator) -> None:
    source, digest = _blob(rng, tmp_path, size=1024)
    store.put_file(source, digest)
    # A second put of the same digest must not fail, nor replace the stored bytes (the
    # digest names the content, so the first copy is already the right one).
    source.write_bytes(b"different bytes under the same name")
    store.put_file(source, digest)

    dest = tmp_path / "out.bin"
    store.get_file(digest, dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest


def test_missing_blob_raises_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    digest = "0" * 64
    assert not store.has(digest)
    with pytest.raises(ArtifactNotFoundError, match=digest):
        store.get_file(digest, tmp_path / "never.bin")
    assert not (tmp_path / "never.bin").exists()


def test_local_store_url_names_its_directory(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    assert store.url == f"file://{tmp_path}"


# --- S3 specifics ----------------------------------------------------------------------


@pytest.mark.s3
def test_s3_keys_live_under_the_prefix(s3_bucket_url: str) -> None:
    store = S3ArtifactStore.from_url(s3_bucket_url + "/")
    digest = "ab" * 32
    assert store.url == s3_bucket_url
    assert store.key(digest) == f"artifacts/{blob_key(digest)}"


@pytest.mark.s3
def test_s3_missing_blob_message_names_bucket_and_key(s3_bucket_url: str, tmp_path: Path) -> None:
    store = S3ArtifactStore.from_url(s3_bucket_url)
    digest = "1" * 64
    with pytest.raises(ArtifactNotFoundError) as info:
        store.get_file(digest, tmp_path / "x")
    assert store.bucket in str(info.value)
    assert store.key(digest) in str(info.value)


def test_s3_unreachable_endpoint_fails_fast(
    free_tcp_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("boto3")
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{free_tcp_port}"
    store = S3ArtifactStore("some-bucket", prefix="p", endpoint_url=endpoint)

    started = time.monotonic()
    with pytest.raises(ArtifactUnavailableError) as info:
        store.check()
    assert time.monotonic() - started < 15

    message = str(info.value)
    assert endpoint in message
    assert "HEADRACE_S3_ENDPOINT_URL" in message
    assert "\n" not in message
    with pytest.raises(ArtifactUnavailableError):
        store.has("2" * 64)


@pytest.mark.s3
def test_s3_missing_bucket_is_reported_by_check(s3_bucket_url: str, s3_server: str) -> None:
    store = S3ArtifactStore.from_url("s3://headrace-no-such-bucket/prefix")
    with pytest.raises(ArtifactUnavailableError) as info:
        store.check()
    message = str(info.value)
    assert "headrace-no-such-bucket" in message
    assert s3_server in message
    assert "does not exist" in message


@pytest.mark.s3
def test_s3_put_into_missing_bucket_is_unavailable(
    s3_bucket_url: str, tmp_path: Path, rng: np.random.Generator
) -> None:
    source, digest = _blob(rng, tmp_path, size=64)
    store = S3ArtifactStore.from_url("s3://headrace-no-such-bucket")
    with pytest.raises(ArtifactUnavailableError, match="does not exist"):
        store.put_file(source, digest)


def test_s3_from_url_rejects_a_url_without_bucket() -> None:
    pytest.importorskip("boto3")
    from headrace.errors import ConfigError

    with pytest.raises(ConfigError, match="s3://bucket"):
        S3ArtifactStore.from_url("s3:///prefix-only")
