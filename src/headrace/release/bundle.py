"""Turning files on disk into a release draft: hashed, profiled, ready to register.

A draft is everything but the version and time, which only the registry can assign
atomically; `ReleaseDraft.manifest` completes it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from headrace.errors import ReleaseError, SchemaError
from headrace.release._gitinfo import read_code_version
from headrace.release.config import ReleaseConfig, load_config
from headrace.release.data import (
    fingerprint_table,
    profile_table,
    read_training_data,
    write_sample,
)
from headrace.release.features import FeatureSpec, load_features, model_inputs
from headrace.release.manifest import (
    DataFingerprint,
    FileEntry,
    Manifest,
    ModelSpec,
    ReferenceProfile,
    Signature,
)
from headrace.release.schema import Schema, load_schema, schema_from_arrow

__all__ = [
    "NAME_PATTERN",
    "ReleaseDraft",
    "build_draft",
    "detect_code_version",
    "file_sha256",
    "load_metrics",
    "validate_name",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Release names: letters, digits, ``.``, ``_`` and ``-``, at most 128 characters."""

_SAMPLE_PATH = "reference/sample.parquet"


def validate_name(name: str) -> str:
    """Return `name` if it is a valid release name, else raise `ReleaseError`."""
    if not NAME_PATTERN.fullmatch(name):
        raise ReleaseError(
            f"Invalid release name '{name}': use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)."
        )
    return name


def file_sha256(path: Path) -> str:
    """Stream a file through sha256 (1 MiB at a time)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_code_version(start: Path | None = None) -> str | None:
    """The git commit of the working tree at `start` (``-dirty`` when modified), if any.

    Read from the repository's files, never by running git there: a checkout's own
    config (``core.fsmonitor``, filters) would run its programs (see `release._gitinfo`).
    """
    return read_code_version(start if start is not None and start.is_dir() else Path.cwd())


def load_metrics(path: Path) -> dict[str, float]:
    """Evaluation metrics from a JSON or YAML mapping of name to number."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReleaseError(f"Cannot read metrics file '{path}': {exc}.") from exc
    except yaml.YAMLError as exc:
        raise ReleaseError(f"Metrics file '{path}' is not valid JSON/YAML: {exc}.") from exc
    try:
        return msgspec.convert(raw, dict[str, float])
    except msgspec.ValidationError as exc:
        raise ReleaseError(
            f"Metrics file '{path}': {exc}. Give a mapping of metric name to number, "
            'e.g. {"auc": 0.91}.'
        ) from exc


@dataclass(frozen=True)
class ReleaseDraft:
    """A release without its version: the files to upload and the manifest parts.

    `sources` maps each file's sha256 to the local file holding its bytes.
    """

    name: str
    model: ModelSpec
    schema: Schema
    features: FeatureSpec
    config: ReleaseConfig
    sources: dict[str, Path]
    data: DataFingerprint | None = None
    profile: ReferenceProfile | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    code_version: str | None = None
    model_dir: Path | None = None
    signature: Signature | None = None

    def manifest(
        self,
        *,
        version: int,
        created_at: str,
        created_by: str,
        parent: str | None,
        parent_digest: str | None,
    ) -> Manifest:
        """The complete manifest, once the registry has assigned a version."""
        return Manifest(
            name=self.name,
            version=version,
            model=self.model,
            schema=self.schema,
            features=self.features,
            config=self.config,
            data=self.data,
            profile=self.profile,
            metrics=self.metrics,
            parent=parent,
            parent_digest=parent_digest,
            code_version=self.code_version,
            created_by=created_by,
            created_at=created_at,
            signature=msgspec.UNSET if self.signature is None else self.signature,
        )


def _model_files(model_path: Path, flavor: str) -> tuple[Path, str, list[Path]]:
    """(directory, entry, files) of a model given as a file, `file.py:attr` or directory."""
    attr = ""
    raw = str(model_path)
    if flavor == "python" and ":" in model_path.name:
        raw, attr = raw.rsplit(":", 1)
        model_path = Path(raw)
    if model_path.is_dir():
        files = sorted(
            p for p in model_path.rglob("*") if p.is_file() and not _skipped(p, model_path)
        )
        if not files:
            raise ReleaseError(f"Model directory '{model_path}' is empty.")
        entry = attr or ""
        return model_path, entry, files
    if not model_path.is_file():
        raise ReleaseError(
            f"Model file '{model_path}' does not exist or is not readable. Check the PATH argument."
        )
    entry = model_path.name + (f":{attr}" if attr else "")
    return model_path.parent, entry, [model_path]


def _skipped(path: Path, root: Path) -> bool:
    """Bytecode caches and hidden files (``.git``, ``.DS_Store``) are not part of a model."""
    parts = path.relative_to(root).parts
    return path.suffix == ".pyc" or any(p == "__pycache__" or p.startswith(".") for p in parts)


def _entry_for_directory(files: list[Path], directory: Path, flavor: str, entry: str) -> str:
    if entry and not entry.startswith(":"):
        return entry
    suffixes = {
        "sklearn": (".pkl", ".pickle", ".joblib"),
        "lightgbm": (".txt", ".lgb"),
        "xgboost": (".json", ".ubj"),
        "onnx": (".onnx",),
        "torch": (".pt", ".pth", ".torchscript"),
        "python": (".py",),
    }.get(flavor, ())
    candidates = [p for p in files if p.suffix.lower() in suffixes]
    if len(candidates) != 1:
        raise ReleaseError(
            f"Cannot tell which file in '{directory}' is the {flavor} model "
            f"({len(candidates)} candidates). Pass the model file itself as PATH."
        )
    return candidates[0].relative_to(directory).as_posix() + entry


def _checked_entry(entry: str, directory: Path, files: list[Path], flavor: str) -> str:
    """`entry` if it names a file of the directory (``module:attr`` for python)."""
    name, _, attr = entry.rpartition(":") if flavor == "python" else ("", "", "")
    name = name if flavor == "python" else entry
    if flavor == "python" and (not name or not attr):
        raise ReleaseError(
            f"--entry '{entry}' must be 'file.py:attribute' or 'module:attribute' for the "
            "python flavor, e.g. 'wrapper:Model'."
        )
    candidates = {name}
    if flavor == "python" and not name.endswith(".py"):
        dotted = name.replace(".", "/")
        candidates = {f"{dotted}.py", f"{dotted}/__init__.py"}
    listed = {p.relative_to(directory).as_posix() for p in files}
    if not candidates & listed:
        raise ReleaseError(
            f"--entry '{entry}' names no file of '{directory}' (looked for "
            f"{', '.join(sorted(candidates))}): give the path of the model file inside it."
        )
    return entry


def build_draft(
    model_path: Path,
    *,
    name: str,
    flavor: str,
    workdir: Path,
    schema_path: Path | None = None,
    features_path: Path | None = None,
    data_path: Path | None = None,
    metrics_path: Path | None = None,
    config_path: Path | None = None,
    code_version: str | None = None,
    entry: str | None = None,
) -> ReleaseDraft:
    """Hash the model files, read schema/features/config/metrics, fingerprint the data.

    Parameters
    ----------
    model_path
        The model file, a directory of model files, or ``file.py:attr`` for python.
    workdir
        A scratch directory for generated files (the reference sample); it must live
        until the draft is registered.
    entry
        For a directory: the main file (``model.onnx``), or for python ``file.py:attr`` /
        ``module:attr``; by default the one file of the flavor's kind in it.
    """
    validate_name(name)
    directory, found, files = _model_files(model_path, flavor)
    if entry is not None:
        if not model_path.is_dir():
            raise ReleaseError(
                f"--entry '{entry}' needs a model directory, but '{model_path}' is a file: "
                "pass the directory holding the model's files as PATH."
            )
        found = _checked_entry(entry, directory, files, flavor)
    elif model_path.is_dir() or found.startswith(":"):
        found = _entry_for_directory(files, directory, flavor, found)
    entry = found
    sources: dict[str, Path] = {}
    entries: list[FileEntry] = []
    for path in files:
        digest = file_sha256(path)
        sources[digest] = path
        entries.append(
            FileEntry(
                path=path.relative_to(directory).as_posix(), sha256=digest, size=path.stat().st_size
            )
        )
    spec = ModelSpec(flavor=flavor, entry=entry, files=entries)

    config = load_config(config_path) if config_path is not None else ReleaseConfig()
    features = load_features(features_path) if features_path is not None else FeatureSpec()
    table: Any = read_training_data(data_path) if data_path is not None else None
    if schema_path is not None:
        schema = load_schema(schema_path)
    elif table is not None:
        inferred = schema_from_arrow(table)
        wanted = set(features.inputs) if features.inputs else None
        keep = [f for f in inferred.fields if wanted is None or f.name in wanted]
        schema = Schema(fields=keep)
    else:
        raise SchemaError(
            "No input schema: pass --schema FILE, or --data FILE to infer the schema "
            "from the training data."
        )
    model_inputs(schema, features)
    if table is not None and schema_path is not None:
        absent = [f.name for f in schema.fields if f.name not in set(table.column_names)]
        if absent:
            raise SchemaError(
                f"Schema fields {', '.join(repr(n) for n in absent)} of '{schema_path}' are not "
                f"columns of the training data '{data_path}': every event would be rejected. "
                "Fix the field names, or add the columns to the data."
            )

    data = profile = None
    if table is not None and data_path is not None:
        data = fingerprint_table(table, source=data_path.name)
        sample_path = workdir / "sample.parquet"
        sample_rows = write_sample(table, sample_path)
        sample_digest = file_sha256(sample_path)
        sources[sample_digest] = sample_path
        base = profile_table(table)
        profile = ReferenceProfile(
            rows=base.rows,
            columns=base.columns,
            sample=FileEntry(
                path=_SAMPLE_PATH, sha256=sample_digest, size=sample_path.stat().st_size
            ),
            sample_rows=sample_rows,
        )
    metrics = load_metrics(metrics_path) if metrics_path is not None else {}
    return ReleaseDraft(
        name=name,
        model=spec,
        schema=schema,
        features=features,
        config=config,
        sources=sources,
        data=data,
        profile=profile,
        metrics=metrics,
        code_version=code_version if code_version is not None else detect_code_version(directory),
        model_dir=directory,
    )
