"""The release manifest: everything needed to reproduce a prediction, and its digest.

The digest is the sha256 of the canonical manifest (JSON, keys sorted, no whitespace),
and the manifest carries the sha256 of every file, so one hex string pins the model,
its schema, features, config, training-data fingerprint, reference profile and metrics.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from headrace.release.config import ReleaseConfig
from headrace.release.features import FeatureSpec
from headrace.release.schema import Schema

__all__ = [
    "MANIFEST_FORMAT",
    "ColumnInfo",
    "ColumnProfile",
    "DataFingerprint",
    "FileEntry",
    "Manifest",
    "ModelSpec",
    "ReferenceProfile",
    "canonical_json",
    "decode_manifest",
    "manifest_digest",
]

MANIFEST_FORMAT = 1
"""Bumped when the manifest layout changes incompatibly."""


class FileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file of a release, addressed by content."""

    path: str
    sha256: str
    size: int


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The model files and how to load them (`entry` is ``file.py:attr`` for python)."""

    flavor: str
    entry: str
    files: list[FileEntry]


class ColumnInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A column of the training data: its name and canonical type."""

    name: str
    type: str


class DataFingerprint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Identity of the training data: sha256 over its full canonical content."""

    sha256: str
    rows: int
    columns: list[ColumnInfo]
    source: str


class ColumnProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Reference distribution of one column, for drift detection.

    Numeric columns carry quantiles (101, from 0 to 1), a histogram and moments;
    categorical ones the frequencies of their most common values (``__other__`` for the
    rest).
    """

    kind: Literal["numeric", "categorical"]
    count: int
    nulls: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    quantiles: list[float] | None = None
    histogram_edges: list[float] | None = None
    histogram_counts: list[int] | None = None
    frequencies: dict[str, int] | None = None


class ReferenceProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The training data as drift detectors see it, plus a bounded sample of rows.

    The sample is a Parquet file among the release's files (`sample`), so warm-up and
    multivariate tests have real rows without the manifest growing with them.
    """

    rows: int
    columns: dict[str, ColumnProfile]
    sample: FileEntry | None = None
    sample_rows: int = 0


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An immutable description of one release."""

    format: int = MANIFEST_FORMAT
    name: str
    version: int
    model: ModelSpec
    schema: Schema
    features: FeatureSpec
    config: ReleaseConfig
    data: DataFingerprint | None = None
    profile: ReferenceProfile | None = None
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    parent: str | None = None
    parent_digest: str | None = None
    code_version: str | None = None
    created_by: str
    created_at: str

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    def all_files(self) -> list[FileEntry]:
        """Every file the release needs: the model files, then the reference sample."""
        files = list(self.model.files)
        if self.profile is not None and self.profile.sample is not None:
            files.append(self.profile.sample)
        return files


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, msgspec's shortest float repr."""
    return msgspec.json.encode(msgspec.to_builtins(value), order="sorted")


def manifest_digest(manifest: Manifest) -> str:
    """The release digest: sha256 of the canonical manifest."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def decode_manifest(raw: bytes | str) -> Manifest:
    """Parse a stored manifest (the inverse of `canonical_json`)."""
    return msgspec.json.decode(raw, type=Manifest)
