"""What a release is, apart from who registered it and when: its content digest.

The release digest (`manifest_digest`) covers the whole manifest, registration included,
so the same files registered twice get two digests that differ only by ``created_at``.
The content digest leaves the registration out: identical content has one content
digest whoever registers it, whenever, under whichever name and version, so the
registry can say "identical to wine:2" instead of making a new version.
"""

from __future__ import annotations

import hashlib

import msgspec

from headrace.release.manifest import Manifest

__all__ = ["REGISTRATION_FIELDS", "content_digest"]

REGISTRATION_FIELDS = frozenset(
    {
        "format",
        "name",
        "version",
        "created_at",
        "created_by",
        "parent",
        "parent_digest",
        "code_version",
    }
)
"""Manifest fields that record a registration (who, when, which version, from what
lineage), not what the release is: `content_digest` leaves them out."""


def content_digest(manifest: Manifest) -> str:
    """sha256 of the canonical manifest without `REGISTRATION_FIELDS`.

    It covers the model files, signature, schema, features, config, data fingerprint,
    reference profile and metrics. Fields added to the manifest later count as content
    unless listed in `REGISTRATION_FIELDS` (an unset optional field is left out of the
    canonical form, so older manifests keep their content digest).
    """
    body = msgspec.to_builtins(manifest)
    content = {key: value for key, value in body.items() if key not in REGISTRATION_FIELDS}
    return hashlib.sha256(msgspec.json.encode(content, order="sorted")).hexdigest()
