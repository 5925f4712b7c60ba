"""The audit trail: an append-only, hash-chained log of every registry mutation.

Records are written in the same database transaction as the change they describe, and
`verify_chain` names the first record that was altered, removed or reordered. A record
deleted from the very end of the log cannot be detected from the log alone: a signed
`Checkpoint` (`make_checkpoint`, `check_against`) of the chain's length and head, kept
outside the database, anchors it. Keys (`HmacKey`, Ed25519) sign checkpoints and releases.
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
from headrace.audit.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    check_against,
    make_checkpoint,
)
from headrace.audit.keys import (
    Ed25519Signer,
    Ed25519Verifier,
    HmacKey,
    Signer,
    Verifier,
    key_id_of,
    load_ed25519_signer,
    load_ed25519_verifier,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "GENESIS_HASH",
    "AuditRecord",
    "Checkpoint",
    "Ed25519Signer",
    "Ed25519Verifier",
    "HmacKey",
    "Signer",
    "Verifier",
    "append_record",
    "audit_table",
    "check_against",
    "iter_records",
    "key_id_of",
    "load_ed25519_signer",
    "load_ed25519_verifier",
    "make_checkpoint",
    "record_hash",
    "verify_chain",
]
