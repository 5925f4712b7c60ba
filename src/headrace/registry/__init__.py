"""The registry: release names, versions, aliases, lineage, artifacts and audit.

`Registry` stores manifests in SQLite (default) or PostgreSQL and files in an
`ArtifactStore` (a `LocalArtifactStore` directory by default, or an `S3ArtifactStore`
bucket). Every mutation appends to the audit chain in the same transaction; every load
checks each file's sha256.
"""

from __future__ import annotations

from headrace.redaction import redact_url
from headrace.registry.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    blob_key,
    open_artifact_store,
)
from headrace.registry.refs import ALIAS_PATTERN, DEFAULT_ALIAS, ReleaseRef, parse_ref
from headrace.registry.s3 import ENDPOINT_ENV, S3ArtifactStore
from headrace.registry.store import ALIAS_CHANNEL, AliasEvent, Registry, Release, ReleaseSummary

__all__ = [
    "ALIAS_CHANNEL",
    "ALIAS_PATTERN",
    "DEFAULT_ALIAS",
    "ENDPOINT_ENV",
    "AliasEvent",
    "ArtifactStore",
    "LocalArtifactStore",
    "Registry",
    "Release",
    "ReleaseRef",
    "ReleaseSummary",
    "S3ArtifactStore",
    "blob_key",
    "open_artifact_store",
    "parse_ref",
    "redact_url",
]
