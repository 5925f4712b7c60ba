"""One conformance suite over every registry store: SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import pickle
import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from headrace.errors import (
    ArtifactIntegrityError,
    AuditChainBrokenError,
    RegistryError,
    RegistryIntegrityError,
    RegistryUnavailableError,
    ReleaseNotFoundError,
)
from headrace.registry import Registry, blob_key
from headrace.registry.store import _COPIES
from headrace.release.bundle import ReleaseDraft
from support.models import ModelFiles, draft_from, register_in_subprocess


def draft_of(files: ModelFiles, tmp_path: Path, name: str = "fraud") -> ReleaseDraft:
    return draft_from(files, tmp_path, name)  # type: ignore[no-any-return]


def test_register_get_list(registry: Registry, files: ModelFiles, tmp_path: Path) -> None:
    first = registry.register(draft_of(files, tmp_path), alias="champion")
    second = registry.register(draft_of(files, tmp_path), allow_duplicate=True)
    assert (first.version, second.version) == (1, 2)
    assert first.digest != second.digest
    assert registry.get("fraud:1").digest == first.digest
    assert registry.get("fraud@champion").version == 1
    assert registry.get("fraud").version == 1
    assert second.manifest.parent == "fraud:1"
    assert second.manifest.parent_digest == first.digest
    assert second.manifest.data is not None and second.manifest.data.rows == 400
    assert second.manifest.metrics["accuracy"] > 0.7
    rows = registry.list_releases("fraud")
    assert [(r.version, r.aliases) for r in rows] == [(1, ("champion",)), (2, ())]
    assert registry.verify_audit() == 3  # two registrations and one alias move


def test_unknown_release_and_alias(registry: Registry, files: ModelFiles, tmp_path: Path) -> None:
    with pytest.raises(ReleaseNotFoundError, match=r"Known names: none"):
        registry.get("nope")
    registry.register(draft_of(files, tmp_path))
    with pytest.raises(ReleaseNotFoundError, match=r"no alias 'champion' for 'fraud'.*alias set"):
        registry.get("fraud")
    with pytest.raises(ReleaseNotFoundError, match=r"'fraud:9' not found.*releases list fraud"):
        registry.get("fraud:9")
    with pytest.raises(ReleaseNotFoundError):
        registry.set_alias("fraud", "champion", 9)
    assert registry.aliases("fraud") == {}


def test_alias_history_and_rollback(registry: Registry, files: ModelFiles, tmp_path: Path) -> None:
    for _ in range(3):
        registry.register(draft_of(files, tmp_path), allow_duplicate=True)
    registry.set_alias("fraud", "champion", 1, reason="first")
    registry.set_alias("fraud", "champion", 2, reason="better auc")
    registry.set_alias("fraud", "champion", 3, reason="retrained")
    assert registry.rollback("fraud", reason="p99 too high").to_version == 2
    # A second rollback walks further back instead of bouncing to 3.
    assert registry.rollback("fraud").to_version == 1
    with pytest.raises(ReleaseNotFoundError, match="no previous target"):
        registry.rollback("fraud")
    moved = registry.rollback("fraud", to=3, reason="fixed upstream")
    assert (moved.from_version, moved.to_version) == (1, 3)
    with pytest.raises(RegistryError, match="already points at version 3"):
        registry.rollback("fraud", to=3)
    history = registry.alias_history("fraud", "champion")
    assert [(e.from_version, e.to_version, e.kind) for e in history] == [
        (None, 1, "set"),
        (1, 2, "set"),
        (2, 3, "set"),
        (3, 2, "rollback"),
        (2, 1, "rollback"),
        (1, 3, "rollback"),
    ]
    assert history[1].reason == "better auc" and history[1].actor == "tester@ci"
    actions = [r.action for r in registry.audit_log(subject="fraud")]
    assert actions.count("rollback") == 3 and actions.count("alias.set") == 3
    assert registry.verify_audit() == 9


def test_register_is_atomic(
    registry: Registry, files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headrace.registry.store as store

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("power cut while writing the audit record")

    monkeypatch.setattr(store, "append_record", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        registry.register(draft_of(files, tmp_path), alias="champion")
    monkeypatch.undo()
    assert registry.list_releases() == []
    assert registry.aliases("fraud") == {}
    assert registry.verify_audit() == 0
    assert registry.register(draft_of(files, tmp_path)).version == 1


def test_concurrent_registrations_get_distinct_versions(
    registry: Registry, registry_url: str, tmp_path: Path
) -> None:
    registry.check()  # migrate once, as a deployed registry would be
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=register_in_subprocess,
            args=(registry_url, str(tmp_path), str(tmp_path / f"m{i}"), queue),
        )
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    versions = sorted(v for chunk in results for v in chunk)
    assert versions == [1, 2, 3, 4, 5, 6]
    assert registry.verify_audit() == 6


def test_tampered_artifact_is_refused_before_unpickling(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    release = registry.register(draft_of(files, tmp_path))
    model = release.manifest.model.files[0]
    blob = tmp_path / "artifacts" / blob_key(model.sha256)
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))

    blob.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ArtifactIntegrityError) as caught:
        registry.fetch(release)
    message = str(caught.value)
    assert "model.pkl" in message and model.sha256 in message
    assert caught.value.actual != model.sha256
    assert not marker.exists()


def test_tampered_cache_copy_is_refused(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    release = registry.register(draft_of(files, tmp_path))
    registry.fetch(release)
    (tmp_path / "cache" / release.digest / "model.pkl").write_bytes(b"not the model")
    _COPIES.forget(release.digest)  # another process has no verified copy of its own
    with pytest.raises(ArtifactIntegrityError, match="model.pkl"):
        registry.fetch(release)


def test_tampered_manifest_row_is_refused(
    registry: Registry, registry_url: str, files: ModelFiles, tmp_path: Path
) -> None:
    registry.register(draft_of(files, tmp_path))
    engine = create_engine(registry_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        raw = conn.execute(text("SELECT manifest FROM headrace_releases")).scalar_one()
        forged = bytes(raw).replace(b'"threshold":0.5', b'"threshold":0.1')
        assert forged != bytes(raw)
        conn.execute(text("UPDATE headrace_releases SET manifest = :m"), {"m": forged})
    engine.dispose()
    with pytest.raises(RegistryIntegrityError, match="fraud:1.*was altered"):
        registry.get("fraud:1")


@pytest.mark.parametrize(
    ("statement", "seq", "what"),
    [
        ("UPDATE headrace_audit_log SET actor = 'mallory' WHERE seq = 2", 2, "altered"),
        ("DELETE FROM headrace_audit_log WHERE seq = 2", 2, "missing"),
        (
            "UPDATE headrace_audit_log SET seq = CASE seq WHEN 2 THEN 3 ELSE 2 END "
            "WHERE seq IN (2, 3)",
            2,
            "does not follow",
        ),
    ],
    ids=["altered", "removed", "reordered"],
)
def test_audit_tampering_is_named(
    registry: Registry,
    registry_url: str,
    files: ModelFiles,
    tmp_path: Path,
    statement: str,
    seq: int,
    what: str,
) -> None:
    for _ in range(3):
        registry.register(draft_of(files, tmp_path), allow_duplicate=True)
    registry.set_alias("fraud", "champion", 2)
    assert registry.verify_audit() == 4
    engine = create_engine(registry_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        if what == "does not follow":
            # Swap two records by moving one out of the way first (seq is the key).
            conn.execute(text("UPDATE headrace_audit_log SET seq = 100 WHERE seq = 2"))
            conn.execute(text("UPDATE headrace_audit_log SET seq = 2 WHERE seq = 3"))
            conn.execute(text("UPDATE headrace_audit_log SET seq = 3 WHERE seq = 100"))
        else:
            conn.execute(text(statement))
    engine.dispose()
    with pytest.raises(AuditChainBrokenError, match=rf"record #{seq}.*{what}") as caught:
        registry.verify_audit()
    assert caught.value.seq == seq


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_postgres_is_one_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://user:secret@127.0.0.1:{_free_port()}/nowhere"
    with Registry(url, artifacts=f"file://{tmp_path}", actor="t", cache_dir=tmp_path) as reg:
        with pytest.raises(RegistryUnavailableError) as caught:
            reg.list_releases()
    message = str(caught.value)
    assert "Cannot reach registry" in message and "doctor" in message
    assert "secret" not in message
