"""An append-only, hash-chained log of every registry mutation.

Each record's hash covers its own content and the previous record's hash, so changing,
removing or reordering any record breaks every link after it. Records are appended in
the caller's transaction: a mutation and its audit record commit together or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)

from headrace.errors import AuditChainBrokenError

__all__ = [
    "GENESIS_HASH",
    "AuditRecord",
    "append_record",
    "audit_table",
    "iter_records",
    "metadata",
    "record_hash",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first record."""

metadata = MetaData()

audit_table = Table(
    "headrace_audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(512), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the chain."""

    seq: int
    at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


def _canonical_details(details: dict[str, Any]) -> str:
    return msgspec.json.encode(details, order="sorted").decode()


def record_hash(
    *, seq: int, at: str, actor: str, action: str, subject: str, details: str, prev_hash: str
) -> str:
    """sha256 over the record's fields (details as canonical JSON) and the previous hash."""
    payload = msgspec.json.encode([seq, at, actor, action, subject, details, prev_hash])
    return hashlib.sha256(payload).hexdigest()


def append_record(
    conn: Connection,
    *,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any],
    at: datetime | None = None,
) -> AuditRecord:
    """Append a record in `conn`'s transaction.

    The caller must hold the registry's write lock (SQLite ``BEGIN IMMEDIATE``, a
    PostgreSQL advisory lock), so no two appends race for the same sequence number.
    """
    last = conn.execute(
        select(audit_table.c.seq, audit_table.c.hash).order_by(audit_table.c.seq.desc()).limit(1)
    ).first()
    seq = 1 if last is None else int(last.seq) + 1
    prev_hash = GENESIS_HASH if last is None else str(last.hash)
    stamp = (at or datetime.now(UTC)).isoformat(timespec="microseconds")
    text = _canonical_details(details)
    digest = record_hash(
        seq=seq,
        at=stamp,
        actor=actor,
        action=action,
        subject=subject,
        details=text,
        prev_hash=prev_hash,
    )
    conn.execute(
        audit_table.insert().values(
            seq=seq,
            at=stamp,
            actor=actor,
            action=action,
            subject=subject,
            details=text,
            prev_hash=prev_hash,
            hash=digest,
        )
    )
    return AuditRecord(
        seq=seq,
        at=stamp,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
        prev_hash=prev_hash,
        hash=digest,
    )


def iter_records(
    conn: Connection, *, subject: str | None = None, action: str | None = None
) -> Iterator[AuditRecord]:
    """Records in sequence order, optionally only one subject's or one action's."""
    query = select(audit_table).order_by(audit_table.c.seq)
    if subject is not None:
        query = query.where(
            (audit_table.c.subject == subject)
            | audit_table.c.subject.startswith(f"{subject}:", autoescape=True)
            | audit_table.c.subject.startswith(f"{subject}@", autoescape=True)
        )
    if action is not None:
        query = query.where(audit_table.c.action == action)
    for row in conn.execute(query):
        yield AuditRecord(
            seq=int(row.seq),
            at=row.at,
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            details=msgspec.json.decode(row.details),
            prev_hash=row.prev_hash,
            hash=row.hash,
        )


def verify_chain(conn: Connection) -> int:
    """Walk the whole chain; return the number of records, or raise at the first bad one.

    Raises
    ------
    AuditChainBrokenError
        Naming the first record that was altered, removed or reordered.
    """
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    for row in conn.execute(select(audit_table).order_by(audit_table.c.seq)):
        seq = int(row.seq)
        if seq != expected_seq:
            raise AuditChainBrokenError(
                f"Audit chain broken at record #{expected_seq}: it is missing (the sequence "
                f"jumps from #{expected_seq - 1} to #{seq}). Restore the record from a backup "
                "and investigate who deleted it.",
                seq=expected_seq,
            )
        if row.prev_hash != expected_prev:
            raise AuditChainBrokenError(
                f"Audit chain broken at record #{seq} ({row.action} {row.subject}): it does not "
                f"follow record #{seq - 1} (prev_hash {row.prev_hash[:12]}... but #{seq - 1} "
                f"hashes to {expected_prev[:12]}...): a record was removed, inserted or "
                "reordered here. Restore the log from a backup and investigate.",
                seq=seq,
            )
        actual = record_hash(
            seq=seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            details=row.details,
            prev_hash=row.prev_hash,
        )
        if actual != row.hash:
            raise AuditChainBrokenError(
                f"Audit chain broken at record #{seq} ({row.action} {row.subject}): its content "
                f"was altered (it hashes to {actual[:12]}... but records {row.hash[:12]}...). "
                "Restore the record from a backup and investigate.",
                seq=seq,
            )
        expected_prev = row.hash
        expected_seq += 1
        count += 1
    return count
