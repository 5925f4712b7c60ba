"""The registry: release names, versions, aliases, lineage, artifacts and audit.

`Registry` stores manifests in SQLite (default) or PostgreSQL and files in an
`ArtifactStore` (a `LocalArtifactStore` directory by default, or an `S3ArtifactStore`
bucket). Every mutation appends to the audit chain in the same transaction; every load
checks each file's sha256 and loads only the bytes it checked. `verify_registry` holds
every release, alias and tag to the chain; a `CheckpointStore` keeps signed checkpoints
of the chain outside the database; a `SigningPolicy` can refuse releases no trusted
Ed25519 key signed. Rollouts keep their state there too (`RolloutState`, with a fenced
lease for their one decider, per-instance evidence as `EvidenceRow`, verdicts as
`VerdictRow`).
"""

from __future__ import annotations

from headrace._redact import redact_url
from headrace.registry.anchors import (
    CHECKPOINTS_ENV,
    CheckpointStore,
    FileCheckpointStore,
    S3CheckpointStore,
    open_checkpoint_store,
)
from headrace.registry.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    blob_key,
    open_artifact_store,
)
from headrace.registry.integrity import ChainState, verify_against_checkpoint, verify_registry
from headrace.registry.refs import ALIAS_PATTERN, DEFAULT_ALIAS, ReleaseRef, parse_ref
from headrace.registry.s3 import ENDPOINT_ENV, S3ArtifactStore
from headrace.registry.signing import (
    REQUIRE_SIGNED_ENV,
    TRUSTED_KEYS_ENV,
    SigningPolicy,
    check_signed,
    release_payload,
    sign_release,
)
from headrace.registry.store import (
    ALIAS_CHANNEL,
    VERIFICATIONS,
    AliasEvent,
    EvidenceRow,
    Registry,
    Release,
    ReleaseSummary,
    RolloutState,
    VerdictRow,
)

__all__ = [
    "ALIAS_CHANNEL",
    "ALIAS_PATTERN",
    "CHECKPOINTS_ENV",
    "DEFAULT_ALIAS",
    "ENDPOINT_ENV",
    "REQUIRE_SIGNED_ENV",
    "TRUSTED_KEYS_ENV",
    "VERIFICATIONS",
    "AliasEvent",
    "ArtifactStore",
    "ChainState",
    "CheckpointStore",
    "EvidenceRow",
    "FileCheckpointStore",
    "LocalArtifactStore",
    "Registry",
    "Release",
    "ReleaseRef",
    "ReleaseSummary",
    "RolloutState",
    "S3ArtifactStore",
    "S3CheckpointStore",
    "SigningPolicy",
    "VerdictRow",
    "blob_key",
    "check_signed",
    "open_artifact_store",
    "open_checkpoint_store",
    "parse_ref",
    "redact_url",
    "release_payload",
    "sign_release",
    "verify_against_checkpoint",
    "verify_registry",
]
