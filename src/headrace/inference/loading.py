"""From the registry to a ready `InferenceService`, and the check a draft passes first."""

from __future__ import annotations

from pathlib import Path

from headrace.errors import ReleaseError
from headrace.inference.contract import verify_with_reference
from headrace.inference.service import InferenceService
from headrace.registry.refs import ReleaseRef
from headrace.registry.store import Registry, Release
from headrace.release.bundle import ReleaseDraft
from headrace.release.config import ReleaseConfig
from headrace.release.features import FeatureSpec, model_inputs
from headrace.release.manifest import Signature
from headrace.release.schema import Schema
from headrace.runtimes.loader import load_model

__all__ = ["load_service", "service_for_release", "verify_draft"]


def _service(
    model_dir: Path,
    *,
    flavor: str,
    entry: str,
    schema: Schema,
    features: FeatureSpec,
    config: ReleaseConfig,
    release: str,
    digest: str,
    signature: Signature | None = None,
) -> InferenceService:
    model = load_model(flavor, model_dir=model_dir, entry=entry, options=dict(config.runtime))
    return InferenceService(
        model,
        schema=schema,
        inputs=model_inputs(schema, features),
        config=config,
        release=release,
        release_digest=digest,
        signature=signature,
    )


def service_for_release(registry: Registry, release: Release) -> InferenceService:
    """Fetch (and verify) a release's files, load its model, wrap it in the core."""
    root = registry.fetch(release)
    manifest = release.manifest
    return _service(
        root,
        flavor=manifest.model.flavor,
        entry=manifest.model.entry,
        schema=manifest.schema,
        features=manifest.features,
        config=manifest.config,
        release=manifest.ref,
        digest=release.digest,
        signature=manifest.input_signature,
    )


def load_service(registry: Registry, ref: str | ReleaseRef) -> InferenceService:
    """The inference core for ``name:version`` / ``name@alias``."""
    return service_for_release(registry, registry.get(ref))


def verify_draft(draft: ReleaseDraft) -> int:
    """Load the draft's model and score its reference sample; return rows scored.

    Registering a model that cannot load, or that rejects the very data it was trained
    on, would only fail later in a worker; this makes it fail at `register` instead.
    """
    if draft.model_dir is None:
        raise ReleaseError(f"Draft '{draft.name}' has no model directory to verify.")
    model = load_model(
        draft.model.flavor,
        model_dir=draft.model_dir,
        entry=draft.model.entry,
        options=dict(draft.config.runtime),
    )
    return verify_with_reference(draft, model)
