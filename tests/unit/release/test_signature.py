"""The signature in the manifest: recorded, read back, absent from old manifests' JSON."""

from __future__ import annotations

import msgspec

from headrace.release.config import ReleaseConfig
from headrace.release.diff import diff_manifests
from headrace.release.features import FeatureSpec
from headrace.release.manifest import (
    FileEntry,
    Manifest,
    ModelSpec,
    Signature,
    SignatureInput,
    SignatureOutput,
    canonical_json,
    decode_manifest,
)
from headrace.release.schema import Field, Schema


def _manifest(signature: Signature | None = None) -> Manifest:
    extra = {} if signature is None else {"signature": signature}
    return Manifest(
        name="wine",
        version=1,
        model=ModelSpec(
            flavor="sklearn",
            entry="model.joblib",
            files=[FileEntry(path="model.joblib", sha256="0" * 64, size=1)],
        ),
        schema=Schema(fields=[Field(name="a", type="float"), Field(name="b", type="string")]),
        features=FeatureSpec(),
        config=ReleaseConfig(),
        created_by="t@ci",
        created_at="2026-12-07T00:00:00Z",
        **extra,
    )


SIGNATURE = Signature(
    inputs=[
        SignatureInput(name="b", type="string", shape=[None]),
        SignatureInput(name="a", type="float", shape=[None]),
    ],
    named=True,
    frame=True,
    outputs=[SignatureOutput(name="probabilities", type="float64", shape=[None, 3])],
    classes=[0, 1, 2],
    source="sklearn feature_names_in_",
)


def test_a_manifest_without_signature_encodes_as_before() -> None:
    """Old releases: no ``signature`` key, so their stored digests still match."""
    old = _manifest()
    assert b"signature" not in canonical_json(old)
    back = decode_manifest(canonical_json(old))
    assert back.input_signature is None
    assert canonical_json(back) == canonical_json(old)


def test_the_signature_round_trips() -> None:
    manifest = _manifest(SIGNATURE)
    back = decode_manifest(canonical_json(manifest))
    assert back.input_signature == SIGNATURE
    assert back.input_signature is not None and back.input_signature.names == ["b", "a"]
    assert msgspec.to_builtins(back)["signature"]["classes"] == [0, 1, 2]


def test_diff_shows_a_changed_input_order() -> None:
    diff = diff_manifests(_manifest(), _manifest(SIGNATURE))
    assert diff.model["signature"] == [None, ["b", "a"]]
