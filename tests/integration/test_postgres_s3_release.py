"""A release on the scaled-out stores: PostgreSQL registry, S3 (moto) artifacts.

Through the Python API and the CLI, as a platform team would run it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import joblib
import numpy as np
import pytest

from headrace.errors import ArtifactIntegrityError
from headrace.inference.loading import load_service
from headrace.registry import Registry, blob_key
from support.cli import run_headrace
from support.models import draft_from, write_sklearn_release


def _split(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix


def test_register_load_and_score_on_postgres_and_s3(
    postgres_url: str, s3_bucket_url: str, s3_server: str, tmp_path: Path
) -> None:
    files = write_sklearn_release(tmp_path / "model")
    with Registry(
        postgres_url, artifacts=s3_bucket_url, actor="api", cache_dir=tmp_path / "cache"
    ) as registry:
        release = registry.register(draft_from(files, tmp_path), alias="champion")
        service = load_service(registry, "fraud")
        names = [f"f{i}" for i in range(files.features.shape[1])]
        result = service.infer(
            {n: files.features[:, i] for i, n in enumerate(names)}, n_rows=len(files.features)
        )
        original = joblib.load(files.model).predict_proba(files.features)[:, 1]
        assert result.scores is not None
        np.testing.assert_allclose(result.scores, original)
        assert result.release == "fraud:1" and result.release_digest == release.digest

        # Tamper with the blob in S3; a worker with a cold cache must refuse it.
        bucket, prefix = _split(s3_bucket_url)
        entry = release.manifest.model.files[0]
        key = f"{prefix}/{blob_key(entry.sha256)}" if prefix else blob_key(entry.sha256)
        s3 = boto3.client("s3", endpoint_url=s3_server)
        s3.put_object(Bucket=bucket, Key=key, Body=b"tampered")
        registry.clear_cache(release)
        with pytest.raises(ArtifactIntegrityError, match=entry.sha256):
            registry.fetch(release)
        assert registry.verify_audit() == 2


def test_cli_on_postgres_and_s3(postgres_url: str, s3_bucket_url: str, tmp_path: Path) -> None:
    files = write_sklearn_release(tmp_path / "model")
    env = {
        **os.environ,
        "HEADRACE_REGISTRY": postgres_url,
        "HEADRACE_ARTIFACTS": s3_bucket_url,
        "HEADRACE_HOME": str(tmp_path / "home"),
    }
    registered = run_headrace(
        "register",
        str(files.model),
        "--name",
        "fraud",
        "--schema",
        str(files.schema),
        "--data",
        str(files.data),
        "--alias",
        "champion",
        env=env,
        cwd=tmp_path,
    )
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.startswith("fraud:1 ")
    data = tmp_path / "score.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({f"f{i}": float(v) for i, v in enumerate(row)})
            for row in files.features[:20]
        )
        + "\n{not json\n"
    )
    scored = run_headrace("predict", "fraud", "--input", str(data), "--json", env=env, cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    summary = json.loads(scored.stdout)
    assert (summary["predicted"], summary["rejected"]) == (20, 1)
    doctor = run_headrace("doctor", env=env, cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    assert "ok    registry" in doctor.stdout and "ok    artifacts s3://" in doctor.stdout

    missing = {**env, "HEADRACE_ARTIFACTS": "s3://no-such-bucket/x"}
    broken = run_headrace("doctor", env=missing, cwd=tmp_path)
    assert broken.returncode == 1
    assert "FAIL  artifacts s3://no-such-bucket/x" in broken.stderr
