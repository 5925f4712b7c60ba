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
    "Signature",
    "SignatureInput",
    "SignatureOutput",
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


class SignatureInput(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One input column of the model, in the model's order.

    Parameters
    ----------
    name
        The schema field that feeds it.
    type
        The field type the model was fitted with (``float``, ``int``, ``string``...).
    dtype
        The model's own element type where it declares one (``float32`` for an ONNX
        ``tensor(float)``), else None.
    shape
        The tensor shape per input, ``None`` for the batch dimension, where declared.
    """

    name: str
    type: str
    dtype: str | None = None
    shape: list[int | None] | None = None


class SignatureOutput(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One output of the model: its name, element type and shape (``None``: any size)."""

    name: str
    type: str
    shape: list[int | None] | None = None


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The model's input contract, read from the model itself at registration.

    Every transport lays the columns out by name in the order of `inputs`, so neither the
    schema's field order nor the columns' order in an event can change what the model sees.

    Parameters
    ----------
    inputs
        The model's inputs, in the model's order.
    named
        The model itself names its inputs (scikit-learn ``feature_names_in_``, LightGBM
        ``feature_name()``, XGBoost ``feature_names``, ONNX graph inputs); when False the
        order came from the feature spec or the schema and only the count was checked.
    frame
        Hand the model a pandas DataFrame with the fitted names and dtypes instead of a
        numpy matrix: a model fitted on a DataFrame with non-numeric columns, or one
        that refused a numpy matrix at registration (it selects columns by name).
    outputs
        What the model returns.
    classes
        A classifier's class labels, in probability-column order.
    source
        Where the signature was read, e.g. ``sklearn feature_names_in_``.
    """

    inputs: list[SignatureInput]
    named: bool = False
    frame: bool = False
    outputs: list[SignatureOutput] = msgspec.field(default_factory=list)
    classes: list[str | int | float | bool] | None = None
    source: str = ""

    @property
    def names(self) -> list[str]:
        """The input names, in the model's order."""
        return [i.name for i in self.inputs]


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
    # UNSET (not None) for releases without one: the field is then left out of the
    # canonical JSON, so manifests registered before signatures keep their digests.
    signature: Signature | msgspec.UnsetType = msgspec.UNSET

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    @property
    def input_signature(self) -> Signature | None:
        """The model's signature, or None for a release registered before signatures."""
        return None if isinstance(self.signature, msgspec.UnsetType) else self.signature

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
