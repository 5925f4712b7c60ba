"""Keys that sign what the registry cannot vouch for itself: checkpoints and releases.

Two kinds: an HMAC-SHA256 secret (one shared key signs and verifies; simple where one
team runs both sides) and Ed25519 (the private key signs, anyone with the public key
verifies; the ``cryptography`` package, imported only when such a key is used). A key
is named by a short id derived from it (never the key itself), so a message can say
which key signed without showing a secret.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Protocol

from headrace._redact import note_secret
from headrace.errors import ConfigError, DependencyMissingError

__all__ = [
    "Ed25519Signer",
    "Ed25519Verifier",
    "HmacKey",
    "Signer",
    "Verifier",
    "key_id_of",
    "load_ed25519_signer",
    "load_ed25519_verifier",
]


class Signer(Protocol):
    """Signs bytes; `algorithm` and `key_id` travel with the signature."""

    algorithm: str
    key_id: str

    def sign(self, payload: bytes) -> str:
        """The signature of `payload`, hex."""
        ...


class Verifier(Protocol):
    """Checks a signature made by the matching `Signer`."""

    algorithm: str
    key_id: str

    def verify(self, payload: bytes, signature: str) -> bool:
        """Whether `signature` (hex) signs `payload` with this key."""
        ...


class HmacKey:
    """An HMAC-SHA256 secret: signs and verifies."""

    algorithm = "hmac-sha256"

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigError(
                f"The HMAC key is {len(secret)} bytes long; use at least 16 random bytes "
                "(e.g. `openssl rand -hex 32`)."
            )
        self._secret = secret
        note_secret(secret.decode("utf-8", errors="ignore"))  # masked in any later message
        self.key_id = hashlib.sha256(b"headrace-hmac-key-id\0" + secret).hexdigest()[:16]

    def sign(self, payload: bytes) -> str:
        """HMAC-SHA256 of `payload`."""
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        """Constant-time comparison with the expected HMAC."""
        return hmac.compare_digest(self.sign(payload), signature)

    def __repr__(self) -> str:
        return f"HmacKey(key_id={self.key_id!r})"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise DependencyMissingError("cryptography", "signing", "Ed25519 signing") from exc
    return serialization, ed25519


def _public_raw(public_key: Any) -> bytes:
    serialization, _ = _crypto()
    raw: bytes = public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return raw


def key_id_of(public_raw: bytes) -> str:
    """The id of an Ed25519 public key: the first 16 hex of its sha256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


class Ed25519Signer:
    """An Ed25519 private key."""

    algorithm = "ed25519"

    def __init__(self, private_key: Any) -> None:
        self._key = private_key
        self.public_raw = _public_raw(private_key.public_key())
        self.key_id = key_id_of(self.public_raw)

    def sign(self, payload: bytes) -> str:
        """The Ed25519 signature of `payload`."""
        return bytes(self._key.sign(payload)).hex()

    def verifier(self) -> Ed25519Verifier:
        """The matching public key."""
        return Ed25519Verifier(self._key.public_key())

    def __repr__(self) -> str:
        return f"Ed25519Signer(key_id={self.key_id!r})"


class Ed25519Verifier:
    """An Ed25519 public key."""

    algorithm = "ed25519"

    def __init__(self, public_key: Any) -> None:
        self._key = public_key
        self.public_raw = _public_raw(public_key)
        self.key_id = key_id_of(self.public_raw)

    @classmethod
    def from_raw(cls, raw: bytes) -> Ed25519Verifier:
        """A verifier from the 32 raw bytes of a public key."""
        _, ed25519 = _crypto()
        return cls(ed25519.Ed25519PublicKey.from_public_bytes(raw))

    def verify(self, payload: bytes, signature: str) -> bool:
        """Whether `signature` is this key's signature of `payload`."""
        from cryptography.exceptions import InvalidSignature

        try:
            self._key.verify(bytes.fromhex(signature), payload)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return f"Ed25519Verifier(key_id={self.key_id!r})"


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the {what} '{path}': {exc.strerror}.") from exc


def load_ed25519_signer(path: Path) -> Ed25519Signer:
    """An Ed25519 private key from a PEM file (PKCS#8, unencrypted).

    Make one with ``openssl genpkey -algorithm ed25519 -out key.pem``.
    """
    serialization, ed25519 = _crypto()
    pem = _read_pem(path, "Ed25519 private key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"'{path}' is not an unencrypted PEM private key: make one with "
            "`openssl genpkey -algorithm ed25519 -out key.pem`."
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"'{path}' holds a {type(key).__name__}, not an Ed25519 private key.")
    return Ed25519Signer(key)


def load_ed25519_verifier(path: Path) -> Ed25519Verifier:
    """An Ed25519 public key from a PEM file (or the public half of a private key file).

    Export one with ``openssl pkey -in key.pem -pubout -out key.pub.pem``.
    """
    serialization, ed25519 = _crypto()
    pem = _read_pem(path, "Ed25519 public key")
    if b"PRIVATE KEY" in pem:
        return load_ed25519_signer(path).verifier()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"'{path}' is not a PEM public key: export one with "
            "`openssl pkey -in key.pem -pubout -out key.pub.pem`."
        ) from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"'{path}' holds a {type(key).__name__}, not an Ed25519 public key.")
    return Ed25519Verifier(key)
