"""Signed checkpoints: the chain's length and head, kept where the database's owner
cannot rewrite them.

A chain verified from inside its own database cannot notice its newest records being
deleted, or the whole database being emptied: what is left still links up. A checkpoint
records ``(seq, head hash, time)`` at some moment, signed with an HMAC secret or an
Ed25519 key; a later verification fails when the chain is shorter than the checkpoint,
or its record ``seq`` hashes to anything but ``head``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from headrace.audit.keys import Signer, Verifier
from headrace.errors import AuditChainBrokenError, AuditError

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "check_against", "make_checkpoint"]

CHECKPOINT_FORMAT = 1


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One signed observation of the chain."""

    format: int = CHECKPOINT_FORMAT
    seq: int
    head: str
    at: str
    registry: str
    algorithm: str
    key_id: str
    signature: str = ""

    def payload(self) -> bytes:
        """The signed bytes: every field but the signature, canonical JSON, domain-tagged."""
        body = msgspec.to_builtins(self)
        body.pop("signature", None)
        return b"headrace-checkpoint-v1:" + msgspec.json.encode(body, order="sorted")

    def name(self) -> str:
        """A file or object name that sorts in chain order: ``checkpoint-<seq>-<time>.json``."""
        stamp = self.at.replace(":", "").replace("-", "").replace("+0000", "Z")
        return f"checkpoint-{self.seq:012d}-{stamp}.json"


def make_checkpoint(*, seq: int, head: str, registry: str, signer: Signer) -> Checkpoint:
    """A checkpoint of a chain of `seq` records ending in `head`, signed by `signer`."""
    unsigned = Checkpoint(
        seq=seq,
        head=head,
        at=datetime.now(UTC).isoformat(timespec="microseconds"),
        registry=registry,
        algorithm=signer.algorithm,
        key_id=signer.key_id,
    )
    return msgspec.structs.replace(unsigned, signature=signer.sign(unsigned.payload()))


def check_against(
    checkpoint: Checkpoint, *, verifier: Verifier, where: str, hashes: list[str]
) -> None:
    """Check the signature, then that the chain (`hashes`, in order) extends the checkpoint.

    Raises
    ------
    AuditError
        The checkpoint's signature is not `verifier`'s (forged, or the wrong key).
    AuditChainBrokenError
        The chain is shorter than the checkpoint, or differs at its record ``seq``.
    """
    if checkpoint.algorithm != verifier.algorithm or checkpoint.key_id != verifier.key_id:
        raise AuditError(
            f"Checkpoint {where} was signed with {checkpoint.algorithm} key "
            f"{checkpoint.key_id}, but verification has {verifier.algorithm} key "
            f"{verifier.key_id}: pass the key that signs checkpoints."
        )
    if not verifier.verify(checkpoint.payload(), checkpoint.signature):
        raise AuditError(
            f"Checkpoint {where} has an invalid signature: it was altered or forged. "
            "Investigate, then restore the checkpoint store from its own backup."
        )
    if len(hashes) < checkpoint.seq:
        raise AuditChainBrokenError(
            f"Audit chain has {len(hashes)} records but checkpoint {where} of "
            f"{checkpoint.at} saw {checkpoint.seq}: records #{len(hashes) + 1} onwards were "
            "deleted (or the registry emptied). Restore the registry from a backup.",
            seq=len(hashes) + 1,
        )
    actual = hashes[checkpoint.seq - 1] if checkpoint.seq else None
    if checkpoint.seq and actual != checkpoint.head:
        raise AuditChainBrokenError(
            f"Audit record #{checkpoint.seq} hashes to {str(actual)[:12]}... but checkpoint "
            f"{where} of {checkpoint.at} recorded {checkpoint.head[:12]}...: the chain was "
            "rewritten up to there. Restore the registry from a backup.",
            seq=checkpoint.seq,
        )
