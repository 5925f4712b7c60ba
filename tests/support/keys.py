"""Signing keys written as a user writes them: PEM files a registry or the CLI reads."""

from __future__ import annotations

from pathlib import Path


def write_ed25519_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A fresh Ed25519 key pair as ``NAME.pem`` (PKCS#8, unencrypted) and ``NAME.pub.pem``
    (SubjectPublicKeyInfo) in `directory`; returns (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = directory / f"{name}.pem"
    public = directory / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
