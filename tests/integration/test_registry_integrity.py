"""Integrity of the registry against its audit chain, anchored outside the database.

Issue 10 defect 7 (a rewritten registry passed `audit verify`), issue 9's content digest
and the alias refusal of unverified releases; on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from headrace.audit.chain import GENESIS_HASH, record_hash
from headrace.audit.keys import HmacKey, load_ed25519_signer, load_ed25519_verifier
from headrace.errors import (
    AuditChainBrokenError,
    AuditError,
    ConfigError,
    RegistryIntegrityError,
    ReleaseError,
)
from headrace.registry import Registry
from headrace.registry.anchors import FileCheckpointStore, open_checkpoint_store
from headrace.registry.signing import SigningPolicy
from headrace.release.identity import content_digest
from headrace.release.manifest import canonical_json, decode_manifest
from headrace.release.manifest import manifest_digest as digest_of
from support.keys import write_ed25519_pair
from support.models import ModelFiles, draft_from, local_registry, write_sklearn_release

HMAC = HmacKey(b"0123456789abcdef-test-only-key")


@pytest.fixture
def other(tmp_path: Path) -> ModelFiles:
    return write_sklearn_release(tmp_path / "other", seed=8, c=0.05)


def _sql(url: str, *statements: tuple[str, dict[str, object]]) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for statement, params in statements:
            conn.execute(text(statement), params)
    engine.dispose()


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(query))]
    engine.dispose()
    return rows


# -- content digest (issue 9) ----------------------------------------------------------


def test_identical_content_is_not_a_new_version(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    first = registry.register(draft_from(files, tmp_path), alias="champion")
    again = registry.register(draft_from(files, tmp_path))
    assert again.duplicate_of == "fraud:1" and again.version == 1
    assert again.digest == first.digest
    assert [r.version for r in registry.list_releases("fraud")] == [1]
    assert registry.verify_audit() == 2  # the duplicate wrote nothing
    forced = registry.register(draft_from(files, tmp_path), allow_duplicate=True)
    assert forced.version == 2 and forced.duplicate_of is None
    # Same content, another registration: one content digest, two release digests.
    assert forced.content_digest == first.content_digest
    assert forced.digest != first.digest
    assert forced.manifest.created_at != first.manifest.created_at


def test_content_digest_ignores_who_and_when_but_not_content(
    registry: Registry, files: ModelFiles, other: ModelFiles, tmp_path: Path
) -> None:
    first = registry.register(draft_from(files, tmp_path))
    changed = registry.register(draft_from(other, tmp_path))
    assert changed.version == 2 and changed.content_digest != first.content_digest
    renamed = registry.register(draft_from(files, tmp_path, name="fraud-eu"))
    assert renamed.duplicate_of is None  # identity is per name
    assert renamed.content_digest == first.content_digest
    record = registry.audit_log(action="register")[0]
    assert record.details["content_digest"] == first.content_digest
    assert record.details["digest"] == first.digest


# -- the tables against the chain (issue 10 defect 7) ------------------------------------


def test_rewritten_manifest_and_digest_fail_verify(
    registry: Registry,
    registry_url: str,
    files: ModelFiles,
    other: ModelFiles,
    tmp_path: Path,
) -> None:
    registry.register(draft_from(files, tmp_path), alias="champion")
    evil = registry.register(draft_from(other, tmp_path))
    victim = registry.get("fraud:1").manifest
    # Point fraud:1 at fraud:2's model blob, with a self-consistent digest.
    forged = decode_manifest(
        canonical_json(victim).replace(
            victim.model.files[0].sha256.encode(), evil.manifest.model.files[0].sha256.encode()
        )
    )
    _sql(
        registry_url,
        (
            "UPDATE headrace_releases SET manifest = :m, digest = :d, content_digest = :c "
            "WHERE version = 1",
            {"m": canonical_json(forged), "d": digest_of(forged), "c": content_digest(forged)},
        ),
    )
    assert registry.get("fraud:1").digest == digest_of(forged)  # the row is consistent
    with pytest.raises(
        RegistryIntegrityError, match=r"'fraud:1' was rewritten: file 'model.pkl'.*record #1"
    ):
        registry.verify_audit()


def test_deleted_newest_records_fail_verify(
    registry: Registry, registry_url: str, files: ModelFiles, other: ModelFiles, tmp_path: Path
) -> None:
    registry.register(draft_from(files, tmp_path), alias="champion")
    registry.register(draft_from(other, tmp_path))
    registry.set_alias("fraud", "champion", 2, reason="better")
    registry.tag_release("fraud:2", "drift", "alarm")
    assert registry.verify_audit() == 5
    _sql(registry_url, ("DELETE FROM headrace_audit_log WHERE seq = 5", {}))
    with pytest.raises(RegistryIntegrityError, match=r"Tag 'drift' of release 'fraud:2'"):
        registry.verify_audit()
    _sql(registry_url, ("DELETE FROM headrace_audit_log WHERE seq = 4", {}))
    with pytest.raises(RegistryIntegrityError, match=r"'fraud@champion' points at version 2"):
        registry.verify_audit()
    _sql(registry_url, ("DELETE FROM headrace_audit_log WHERE seq = 3", {}))
    with pytest.raises(RegistryIntegrityError, match=r"'fraud:2' has no registration"):
        registry.verify_audit()


def test_a_release_deleted_from_the_tables_fails_verify(
    registry: Registry, registry_url: str, files: ModelFiles, other: ModelFiles, tmp_path: Path
) -> None:
    registry.register(draft_from(files, tmp_path))
    registry.register(draft_from(other, tmp_path))
    _sql(registry_url, ("DELETE FROM headrace_releases WHERE version = 2", {}))
    with pytest.raises(RegistryIntegrityError, match=r"'fraud:2' was registered.*#2.*is gone"):
        registry.verify_audit()


def test_releases_without_a_chain_fail_verify(
    registry: Registry, registry_url: str, files: ModelFiles, tmp_path: Path
) -> None:
    registry.register(draft_from(files, tmp_path))
    _sql(registry_url, ("DELETE FROM headrace_audit_log", {}))
    with pytest.raises(RegistryIntegrityError, match=r"'fraud:1' has no registration"):
        registry.verify_audit()


# -- checkpoints -------------------------------------------------------------------------


def test_checkpoint_catches_a_cut_or_rewritten_chain(
    registry: Registry, registry_url: str, files: ModelFiles, other: ModelFiles, tmp_path: Path
) -> None:
    store = FileCheckpointStore(tmp_path / "anchors")
    assert store.latest() is None
    with pytest.raises(AuditError, match="No checkpoint"):
        registry.verify_checkpoint(store, verifier=HMAC)
    registry.register(draft_from(files, tmp_path), alias="champion")
    registry.record_event("drift.alarm", "fraud:1", {"column": "amount"})
    written, where = registry.write_checkpoint(store, signer=HMAC)
    assert written.seq == 3 and Path(where).is_file()
    registry.register(draft_from(other, tmp_path))  # the chain may grow past it
    state, checkpoint = registry.verify_checkpoint(store, verifier=HMAC)
    assert (state.records, checkpoint.seq) == (4, 3)

    # The newest records deleted, the tables still agreeing (a drift alarm leaves no row):
    # only the anchor notices.
    registry.write_checkpoint(store, signer=HMAC)
    _sql(
        registry_url,
        ("DELETE FROM headrace_audit_log WHERE seq = 4", {}),
        ("DELETE FROM headrace_releases WHERE version = 2", {}),
    )
    registry.verify_audit()
    with pytest.raises(AuditChainBrokenError, match=r"3 records but checkpoint .* saw 4"):
        registry.verify_checkpoint(store, verifier=HMAC)

    # The whole chain rewritten consistently (every hash recomputed): a different head.
    rows = _rows(
        registry_url,
        "SELECT seq, at, actor, action, subject, details FROM headrace_audit_log ORDER BY seq",
    )
    prev = GENESIS_HASH
    updates: list[tuple[str, dict[str, object]]] = []
    for seq, at, actor, action, subject, details in rows:
        actor = "mallory" if seq == 2 else actor
        digest = record_hash(
            seq=int(str(seq)),
            at=str(at),
            actor=str(actor),
            action=str(action),
            subject=str(subject),
            details=str(details),
            prev_hash=prev,
        )
        updates.append(
            (
                "UPDATE headrace_audit_log SET actor = :a, prev_hash = :p, hash = :h "
                "WHERE seq = :s",
                {"a": actor, "p": prev, "h": digest, "s": seq},
            )
        )
        prev = digest
    _sql(registry_url, *updates)
    registry.verify_audit()
    for path in (tmp_path / "anchors").iterdir():
        if path.name > Path(where).name:
            path.unlink()  # back to the checkpoint of 3 records
    with pytest.raises(AuditChainBrokenError, match=r"record #3 hashes to .* rewritten"):
        registry.verify_checkpoint(store, verifier=HMAC)


def test_emptied_sqlite_file_fails_against_its_checkpoint(
    files: ModelFiles, tmp_path: Path
) -> None:
    store = FileCheckpointStore(tmp_path / "anchors")
    with local_registry(tmp_path) as registry:
        registry.register(draft_from(files, tmp_path), alias="champion")
        registry.write_checkpoint(store, signer=HMAC)
    database = tmp_path / "registry.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(b"")
    with local_registry(tmp_path) as registry:
        assert registry.verify_audit() == 0  # an empty registry is consistent...
        with pytest.raises(AuditChainBrokenError, match=r"0 records but checkpoint .* saw 2"):
            registry.verify_checkpoint(store, verifier=HMAC)  # ...but not with its anchor


def test_ed25519_checkpoints_and_forgeries(
    registry: Registry, files: ModelFiles, tmp_path: Path
) -> None:
    private, public = write_ed25519_pair(tmp_path, "audit")
    _, stranger = write_ed25519_pair(tmp_path, "stranger")
    store = FileCheckpointStore(tmp_path / "anchors")
    registry.register(draft_from(files, tmp_path))
    written, where = registry.write_checkpoint(store, signer=load_ed25519_signer(private))
    assert written.algorithm == "ed25519"
    registry.verify_checkpoint(store, verifier=load_ed25519_verifier(public))
    registry.verify_checkpoint(store, verifier=load_ed25519_verifier(private))  # its public half
    with pytest.raises(AuditError, match="signed with ed25519 key .* pass the key"):
        registry.verify_checkpoint(store, verifier=load_ed25519_verifier(stranger))
    with pytest.raises(AuditError, match="signed with ed25519"):
        registry.verify_checkpoint(store, verifier=HMAC)
    forged = Path(where).read_text().replace('"seq":1', '"seq":9')
    Path(where).write_text(forged)
    with pytest.raises(AuditError, match="invalid signature"):
        registry.verify_checkpoint(store, verifier=load_ed25519_verifier(public))


@pytest.mark.s3
def test_checkpoints_in_s3(files: ModelFiles, tmp_path: Path, s3_bucket_url: str) -> None:
    store = open_checkpoint_store(s3_bucket_url.replace("/artifacts", "/checkpoints"))
    with local_registry(tmp_path) as registry:
        registry.register(draft_from(files, tmp_path))
        first, where = registry.write_checkpoint(store, signer=HMAC)
        assert where.startswith("s3://") and where.endswith(first.name())
        registry.register(draft_from(write_sklearn_release(tmp_path / "b", seed=9), tmp_path))
        second, _ = registry.write_checkpoint(store, signer=HMAC)
        _, latest = registry.verify_checkpoint(store, verifier=HMAC)
        assert latest == second and latest.seq == 2


def test_checkpoint_keys_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        HmacKey(b"short")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_ed25519_verifier(bad)
    with pytest.raises(ConfigError, match="Unsupported checkpoint location"):
        open_checkpoint_store("ftp://x/y")
    assert "0123456789abcdef" not in repr(HMAC)


# -- aliases refuse unverified releases (issue 9) ---------------------------------------


def test_alias_refuses_an_unverified_release_unless_forced(
    registry: Registry, files: ModelFiles, other: ModelFiles, tmp_path: Path
) -> None:
    registry.register(draft_from(files, tmp_path), alias="champion", verification="passed")
    registry.register(draft_from(other, tmp_path), verification="skipped")
    with pytest.raises(ReleaseError, match=r"'fraud:2' skipped verification.*--force --reason"):
        registry.set_alias("fraud", "champion", 2)
    with pytest.raises(ConfigError, match="needs a reason"):
        registry.set_alias("fraud", "champion", 2, force=True)
    assert registry.aliases("fraud") == {"champion": 1}
    moved = registry.set_alias("fraud", "champion", 2, force=True, reason="hotfix, checked by hand")
    assert moved.to_version == 2
    record = registry.audit_log(action="alias.set")[-1]
    assert record.details["forced"] == "skipped"
    assert record.details["reason"] == "hotfix, checked by hand"
    third = write_sklearn_release(tmp_path / "third", seed=10)
    with pytest.raises(ReleaseError, match="failed verification"):
        registry.register(draft_from(third, tmp_path), alias="shadow", verification="failed")
    assert [r.version for r in registry.list_releases("fraud")] == [1, 2]  # nothing written
    registry.verify_audit()


# -- signed releases ---------------------------------------------------------------------


def test_require_signed_refuses_unsigned_and_untrusted(
    registry_url: str, files: ModelFiles, other: ModelFiles, tmp_path: Path
) -> None:
    private, public = write_ed25519_pair(tmp_path, "release")
    stranger, _ = write_ed25519_pair(tmp_path, "stranger")
    with local_registry(tmp_path, url=registry_url) as writer:
        signed = writer.register(draft_from(files, tmp_path), sign_key=load_ed25519_signer(private))
        unsigned = writer.register(draft_from(other, tmp_path))
        third = write_sklearn_release(tmp_path / "third", seed=10)
        foreign = writer.register(
            draft_from(third, tmp_path), sign_key=load_ed25519_signer(stranger)
        )
        writer.fetch(unsigned)  # signatures are not required by default
        assert writer.audit_log(action="register")[0].details["signed_by_key"]
    policy = SigningPolicy.from_env(
        {"HEADRACE_REQUIRE_SIGNED": "1", "HEADRACE_TRUSTED_KEYS": str(public)}
    )
    with local_registry(tmp_path, url=registry_url) as strict:
        strict.signing = policy
        for release in (signed, unsigned, foreign):
            strict.clear_cache(release)
        assert (strict.fetch(signed) / "model.pkl").is_file()
        with pytest.raises(RegistryIntegrityError, match=r"'fraud:2' has no signature"):
            strict.fetch(unsigned)
        with pytest.raises(RegistryIntegrityError, match="no valid signature by a trusted key"):
            strict.fetch(foreign)
        # A signature row copied onto another release does not sign it.
        _sql(
            registry_url,
            (
                "INSERT INTO headrace_release_signatures SELECT name, 2, key_id, algorithm, "
                "public_key, signature, signed_at, signed_by FROM headrace_release_signatures "
                "WHERE version = 1",
                {},
            ),
        )
        with pytest.raises(RegistryIntegrityError, match="no valid signature"):
            strict.fetch(unsigned)
    with pytest.raises(ConfigError, match="HEADRACE_TRUSTED_KEYS"):
        SigningPolicy.from_env({"HEADRACE_REQUIRE_SIGNED": "1"})


def test_the_hmac_secret_is_masked_once_seen() -> None:
    from headrace._redact import redact_text

    secret = "a-checkpoint-secret-7f3a9c"  # noqa: S105 (a planted test secret)
    HmacKey(secret.encode())
    assert secret not in redact_text(f"failed with key {secret}")
