"""The exception tree: every error headrace raises on purpose derives from `HeadraceError`.

::

    HeadraceError
    ├── ConfigError                  a setting, URL or CLI argument is wrong
    ├── DependencyMissingError       an optional package is not installed
    ├── SchemaError                  a schema / features / config file is malformed
    ├── ValidationError              one input value breaks the schema
    ├── ReleaseError                 building a release from its parts failed
    ├── RegistryError                the registry store cannot do what was asked
    │   ├── RegistryUnavailableError     the store cannot be reached
    │   ├── ReleaseNotFoundError         no such release, version or alias
    │   └── RegistryIntegrityError       a stored manifest no longer matches its digest
    ├── ArtifactError                an artifact store cannot do what was asked
    │   ├── ArtifactUnavailableError     the store cannot be reached
    │   ├── ArtifactNotFoundError        a blob the manifest names is missing
    │   └── ArtifactIntegrityError       a blob's sha256 differs from the manifest
    ├── ModelLoadError               a model file is not a model of its flavor
    ├── UnknownModelError            a served model name or version does not exist
    ├── ModelUnavailableError        a served model exists but cannot be loaded right now
    ├── ModelError                   a loaded model raised while predicting
    ├── AuditError                   the audit chain cannot be read or written
    │   └── AuditChainBrokenError        verification found an altered/removed/reordered record
    ├── InputFileError               a file to score cannot be read
    ├── DriftError                   drift inputs do not fit together (columns, types)
    ├── PipelineSpecError            a pipeline YAML is malformed (names the file and key)
    ├── RolloutError                 a rollout cannot start, move or end as asked
    │   ├── RolloutRefusedError          the candidate failed the checks before any traffic
    │   └── RolloutLeaseLostError        a decider's lease or view is stale: it must not decide
    └── StreamError                  a source or sink failed
        ├── StreamUnavailableError       the broker cannot be reached
        ├── SourceError                  consuming or committing failed
        │   └── CommitRefusedError           the group moved on: the batch comes again
        └── SinkError                    a record was not acknowledged

Messages say what happened, the offending value, where, and how to fix it. Domain errors
know nothing of HTTP or exit codes; the transports map them.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactNotFoundError",
    "ArtifactUnavailableError",
    "AuditChainBrokenError",
    "AuditError",
    "CommitRefusedError",
    "ConfigError",
    "DependencyMissingError",
    "DriftError",
    "HeadraceError",
    "InputFileError",
    "ModelError",
    "ModelLoadError",
    "ModelUnavailableError",
    "PipelineSpecError",
    "RegistryError",
    "RegistryIntegrityError",
    "RegistryUnavailableError",
    "ReleaseError",
    "ReleaseNotFoundError",
    "RolloutError",
    "RolloutLeaseLostError",
    "RolloutRefusedError",
    "SchemaError",
    "SinkError",
    "SourceError",
    "StreamError",
    "StreamUnavailableError",
    "UnknownModelError",
    "ValidationError",
]


class HeadraceError(Exception):
    """Root of every error headrace raises on purpose."""


class ConfigError(HeadraceError):
    """A setting, URL or command-line argument is wrong."""


class DependencyMissingError(HeadraceError, ImportError):
    """An optional package is missing; the message carries the install command."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"Package '{package}' is missing: run pip install 'headrace[{extra}]' to use {feature}"
        )


class SchemaError(HeadraceError):
    """A schema, features or config file is malformed."""


class ValidationError(HeadraceError):
    """A single input value breaks the schema; `path` is like ``$.amount``."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message if path is None else f"{message} - at `{path}`")


class ReleaseError(HeadraceError):
    """Building a release from its parts failed."""


class RegistryError(HeadraceError):
    """The registry store cannot do what was asked."""


class RegistryUnavailableError(RegistryError):
    """The registry store cannot be reached."""


class ReleaseNotFoundError(RegistryError, LookupError):
    """No release, version or alias matches the reference."""


class RegistryIntegrityError(RegistryError):
    """A stored manifest no longer hashes to the digest it was registered with."""


class ArtifactError(HeadraceError):
    """An artifact store cannot do what was asked."""


class ArtifactUnavailableError(ArtifactError):
    """The artifact store cannot be reached."""


class ArtifactNotFoundError(ArtifactError, LookupError):
    """A blob the manifest names is missing from the artifact store."""


class ArtifactIntegrityError(ArtifactError):
    """A blob's sha256 differs from the one its manifest records."""

    def __init__(self, *, path: str, expected: str, actual: str, where: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Artifact '{path}' in {where} is corrupted or tampered with: expected sha256 "
            f"{expected}, got {actual}. Re-register the release from its original files."
        )


class ModelLoadError(HeadraceError):
    """A model file is missing, unreadable, or not a model of its flavor."""


class ModelError(HeadraceError):
    """A loaded model raised while predicting."""


class UnknownModelError(HeadraceError, LookupError):
    """A model name or version that the server does not serve (or the registry lacks)."""


class ModelUnavailableError(HeadraceError):
    """A served model exists but cannot answer now: its load failed, or it was unloaded."""


class AuditError(HeadraceError):
    """The audit chain cannot be read or written."""


class AuditChainBrokenError(AuditError):
    """Verification found a record that was altered, removed or reordered."""

    def __init__(self, message: str, *, seq: int) -> None:
        self.seq = seq
        super().__init__(message)


class InputFileError(HeadraceError):
    """A file to score cannot be read or has the wrong format."""


class DriftError(HeadraceError):
    """Drift inputs do not fit together: no common columns, a column's type differs."""


class PipelineSpecError(ConfigError):
    """A pipeline spec is malformed; the message names the file and the key."""


class RolloutError(HeadraceError):
    """A rollout cannot start, move or end as asked (one already runs, none runs, ...)."""


class RolloutRefusedError(RolloutError):
    """The candidate failed a check before any traffic; `reason` says which and why.

    `plan` is the rollout plan as far as it was built (a ``RolloutPlan``), for recording
    the refusal, or None when not even the baseline was known.
    """

    def __init__(self, reason: str, *, plan: object | None = None) -> None:
        self.reason = reason
        self.plan = plan
        super().__init__(reason)


class RolloutLeaseLostError(RolloutError):
    """A decider's lease expired and another holder took it (a newer epoch), the rollout
    ended, or it moved past the step the verdict judged: the stale verdict is refused, so
    two processes never decide one rollout."""


class StreamError(HeadraceError):
    """A source or sink failed; messages carry ``topic[partition]@offset`` where known."""


class StreamUnavailableError(StreamError):
    """The broker or server behind a source or sink cannot be reached."""


class SourceError(StreamError):
    """Consuming or committing failed."""


class SinkError(StreamError):
    """A record was not acknowledged by its sink (so its source offset is not committed)."""


class CommitRefusedError(SourceError):
    """The broker refused a commit because the group moved on (a rebalance, an expired
    session): the messages will be delivered again, to this member or the next owner.

    Not a failure of the delivery promise: a worker whose outputs were acknowledged logs
    it and carries on; the repeats carry the same idempotency keys.
    """
