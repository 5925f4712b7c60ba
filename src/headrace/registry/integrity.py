"""The registry's tables checked against its audit chain.

The chain alone proves only that its records follow one another. Someone with write
access to the database can rewrite a release's manifest and digest together (pointing a
model at another blob), delete the newest records, or empty the tables; each leaves a
chain that verifies. So every release row is checked against the chain: its manifest
must hash to its digest, its content digest must match the manifest, and a
``register`` record must carry that digest (records from before content digests carry
the release digest only). Replaying the chain's alias moves and tags must give exactly
the aliases and tags in the tables, and every registered release must still be there.
What no table can reveal (the newest records deleted together with what they
describe, or everything emptied) needs an anchor outside the database: a checkpoint
(`headrace.registry.anchors`).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy import Connection, select

from headrace.audit.chain import AuditRecord, audit_table, iter_records, verify_chain
from headrace.audit.checkpoint import Checkpoint, check_against
from headrace.audit.keys import Verifier
from headrace.errors import RegistryIntegrityError
from headrace.registry.tables import aliases, release_tags, releases
from headrace.release.identity import content_digest
from headrace.release.manifest import decode_manifest, manifest_digest

__all__ = ["ChainState", "verify_against_checkpoint", "verify_registry"]


@dataclass(frozen=True)
class ChainState:
    """What `verify_registry` found: the chain's length and head, and releases checked."""

    records: int
    head: str | None
    releases: int


def verify_registry(conn: Connection) -> ChainState:
    """Verify the chain, then every release, alias and tag against it.

    Raises
    ------
    AuditChainBrokenError
        A record was altered, removed or reordered.
    RegistryIntegrityError
        A table disagrees with the chain; the message names the row and the fix.
    """
    count = verify_chain(conn)
    records = list(iter_records(conn))
    registered: dict[str, AuditRecord] = {}
    alias_state: dict[tuple[str, str], int] = {}
    tag_state: dict[tuple[str, int, str], str] = {}
    for record in records:
        if record.action == "register":
            registered[record.subject] = record
        elif record.action in ("alias.set", "rollback"):
            name, _, alias = record.subject.partition("@")
            alias_state[(name, alias)] = int(record.details["to"])
        elif record.action == "release.tag":
            name, _, version = record.subject.rpartition(":")
            tag_state[(name, int(version), str(record.details["tag"]))] = str(record.details["to"])
    rows = conn.execute(
        select(
            releases.c.name,
            releases.c.version,
            releases.c.digest,
            releases.c.content_digest,
            releases.c.manifest,
        ).order_by(releases.c.name, releases.c.version)
    ).all()
    seen: set[str] = set()
    for row in rows:
        ref = f"{row.name}:{row.version}"
        seen.add(ref)
        _check_release(ref, row.digest, row.content_digest, bytes(row.manifest), registered)
    missing = sorted(set(registered) - seen)
    if missing:
        record = registered[missing[0]]
        raise RegistryIntegrityError(
            f"Release '{missing[0]}' was registered (audit record #{record.seq}) but is gone "
            "from the registry: restore it from a backup and investigate who deleted it."
        )
    _check_aliases(conn, alias_state)
    _check_tags(conn, tag_state)
    return ChainState(records=count, head=records[-1].hash if records else None, releases=len(rows))


def verify_against_checkpoint(
    conn: Connection, checkpoint: Checkpoint, *, verifier: Verifier, where: str
) -> ChainState:
    """Check the chain extends `checkpoint` (read from `where`), then `verify_registry`.

    Raises
    ------
    AuditError
        The checkpoint's signature is not `verifier`'s.
    AuditChainBrokenError
        The chain is shorter than the checkpoint or differs from it.
    """
    hashes = [
        str(h)
        for h in conn.execute(select(audit_table.c.hash).order_by(audit_table.c.seq))
        .scalars()
        .all()
    ]
    # The checkpoint first: an emptied registry fails as "shorter", which says more
    # than the (empty, consistent) tables would.
    check_against(checkpoint, verifier=verifier, where=f"'{where}'", hashes=hashes)
    return verify_registry(conn)


def _check_release(
    ref: str,
    digest: str,
    stored_content: str | None,
    raw: bytes,
    registered: dict[str, AuditRecord],
) -> None:
    restore = "Restore the registry from a backup and investigate."
    try:
        manifest = decode_manifest(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RegistryIntegrityError(
            f"Release '{ref}' has an unreadable manifest ({str(exc)[:80]}). {restore}"
        ) from exc
    actual = manifest_digest(manifest)
    if actual != digest:
        raise RegistryIntegrityError(
            f"Release '{ref}' was altered: its manifest hashes to {actual[:12]}... but the "
            f"row says {digest[:12]}.... {restore}"
        )
    content = content_digest(manifest)
    if stored_content is not None and stored_content != content:
        raise RegistryIntegrityError(
            f"Release '{ref}' was altered: its content digest column says "
            f"{stored_content[:12]}... but its manifest's content is {content[:12]}.... {restore}"
        )
    record = registered.get(ref)
    if record is None:
        raise RegistryIntegrityError(
            f"Release '{ref}' has no registration in the audit chain: it was written into "
            f"the database behind the registry's back, or the chain was cut. {restore}"
        )
    recorded_files = record.details.get("files")
    actual_files = {entry.path: entry.sha256 for entry in manifest.all_files()}
    if recorded_files is not None and recorded_files != actual_files:
        changed = sorted(
            path
            for path in set(recorded_files) | set(actual_files)
            if recorded_files.get(path) != actual_files.get(path)
        )
        raise RegistryIntegrityError(
            f"Release '{ref}' was rewritten: file '{changed[0]}' differs from the sha256 "
            f"audit record #{record.seq} registered. {restore}"
        )
    if record.details.get("digest") != digest:
        raise RegistryIntegrityError(
            f"Release '{ref}' was rewritten: audit record #{record.seq} registered digest "
            f"{str(record.details.get('digest'))[:12]}... but the release now has "
            f"{digest[:12]}.... {restore}"
        )
    recorded_content = record.details.get("content_digest")
    if recorded_content is not None and recorded_content != content:
        raise RegistryIntegrityError(
            f"Release '{ref}' was rewritten: audit record #{record.seq} registered content "
            f"{str(recorded_content)[:12]}... but the release now has {content[:12]}.... "
            f"{restore}"
        )


def _check_aliases(conn: Connection, expected: dict[tuple[str, str], int]) -> None:
    actual = {
        (row.name, row.alias): int(row.version)
        for row in conn.execute(select(aliases.c.name, aliases.c.alias, aliases.c.version))
    }
    for key in sorted(set(expected) | set(actual)):
        want, have = expected.get(key), actual.get(key)
        if want != have:
            raise RegistryIntegrityError(
                f"Alias '{key[0]}@{key[1]}' points at version {have if have else 'nothing'} "
                f"but the audit chain's last move of it says {want if want else 'nothing'}: "
                "the alias or the newest audit records were changed outside headrace. "
                "Restore them from a backup and investigate."
            )


def _check_tags(conn: Connection, expected: dict[tuple[str, int, str], str]) -> None:
    rows = conn.execute(
        select(
            release_tags.c.name, release_tags.c.version, release_tags.c.tag, release_tags.c.value
        )
    )
    actual = {(row.name, int(row.version), row.tag): row.value for row in rows}
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            raise RegistryIntegrityError(
                f"Tag '{key[2]}' of release '{key[0]}:{key[1]}' is {actual.get(key)!r} but the "
                f"audit chain says {expected.get(key)!r}: it or the newest audit records were "
                "changed outside headrace. Restore them from a backup and investigate."
            )
