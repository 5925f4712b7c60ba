"""The registry: release names, versions, aliases, lineage, artifacts and audit.

`Registry` stores manifests in SQLite (default) or PostgreSQL and files in an
`ArtifactStore` (a local directory by default, or S3). Every mutation appends to the
audit chain in the same transaction; every load checks each file's sha256.
"""

from __future__ import annotations

from headrace.registry.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    blob_key,
    open_artifact_store,
)
from headrace.registry.refs import DEFAULT_ALIAS, ReleaseRef, parse_ref
from headrace.registry.store import AliasEvent, Registry, Release, ReleaseSummary, redact_url

__all__ = [
    "DEFAULT_ALIAS",
    "AliasEvent",
    "ArtifactStore",
    "LocalArtifactStore",
    "Registry",
    "Release",
    "ReleaseRef",
    "ReleaseSummary",
    "blob_key",
    "open_artifact_store",
    "parse_ref",
    "redact_url",
]
