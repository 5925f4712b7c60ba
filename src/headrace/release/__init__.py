"""The release: a model with everything needed to reproduce its predictions.

A release bundles the model files (by sha256) with the input schema, the feature spec,
the post-processing config, the training-data fingerprint and reference profile, and
the evaluation metrics. `build_draft` turns files on disk into a `ReleaseDraft`; the
registry assigns its version and records the `Manifest`, whose digest names it.
"""

from __future__ import annotations

from headrace.release.bundle import (
    NAME_PATTERN,
    ReleaseDraft,
    build_draft,
    detect_code_version,
    file_sha256,
    load_metrics,
    validate_name,
)
from headrace.release.config import (
    TASKS,
    ReleaseConfig,
    Task,
    config_from_builtins,
    load_config,
)
from headrace.release.data import (
    PROFILE_BINS,
    SAMPLE_ROWS,
    TOP_CATEGORIES,
    fingerprint_table,
    profile_table,
    read_training_data,
    write_sample,
)
from headrace.release.diff import PARTS, ReleaseDiff, diff_manifests, diff_rows, model_digest
from headrace.release.features import (
    FeatureSpec,
    features_from_builtins,
    load_features,
    model_inputs,
)
from headrace.release.identity import REGISTRATION_FIELDS, content_digest
from headrace.release.manifest import (
    MANIFEST_FORMAT,
    ColumnInfo,
    ColumnProfile,
    DataFingerprint,
    FileEntry,
    Manifest,
    ModelSpec,
    ReferenceProfile,
    Signature,
    SignatureInput,
    SignatureOutput,
    canonical_json,
    decode_manifest,
    manifest_digest,
)
from headrace.release.schema import (
    FIELD_TYPES,
    Field,
    FieldType,
    Schema,
    load_schema,
    schema_from_arrow,
    schema_from_builtins,
    schema_to_builtins,
)

__all__ = [
    "FIELD_TYPES",
    "MANIFEST_FORMAT",
    "NAME_PATTERN",
    "PARTS",
    "PROFILE_BINS",
    "REGISTRATION_FIELDS",
    "SAMPLE_ROWS",
    "TASKS",
    "TOP_CATEGORIES",
    "ColumnInfo",
    "ColumnProfile",
    "DataFingerprint",
    "FeatureSpec",
    "Field",
    "FieldType",
    "FileEntry",
    "Manifest",
    "ModelSpec",
    "ReferenceProfile",
    "ReleaseConfig",
    "ReleaseDiff",
    "ReleaseDraft",
    "Schema",
    "Signature",
    "SignatureInput",
    "SignatureOutput",
    "Task",
    "build_draft",
    "canonical_json",
    "config_from_builtins",
    "content_digest",
    "decode_manifest",
    "detect_code_version",
    "diff_manifests",
    "diff_rows",
    "features_from_builtins",
    "file_sha256",
    "fingerprint_table",
    "load_config",
    "load_features",
    "load_metrics",
    "load_schema",
    "manifest_digest",
    "model_digest",
    "model_inputs",
    "profile_table",
    "read_training_data",
    "schema_from_arrow",
    "schema_from_builtins",
    "schema_to_builtins",
    "validate_name",
    "write_sample",
]
