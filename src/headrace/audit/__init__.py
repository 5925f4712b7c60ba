"""The audit trail: an append-only, hash-chained log of every registry mutation.

Records are written in the same database transaction as the change they describe, and
`verify_chain` names the first record that was altered, removed or reordered. A record
deleted from the very end of the log cannot be detected from the log alone; export the
head hash (`headrace audit log --json`) to an external system to anchor it.
"""

from __future__ import annotations

from headrace.audit.chain import (
    GENESIS_HASH,
    AuditRecord,
    append_record,
    audit_table,
    iter_records,
    record_hash,
    verify_chain,
)

__all__ = [
    "GENESIS_HASH",
    "AuditRecord",
    "append_record",
    "audit_table",
    "iter_records",
    "record_hash",
    "verify_chain",
]
