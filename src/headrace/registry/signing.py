"""Release signatures: an Ed25519 key vouches for a release digest.

The digest pins every byte of a release, so a signature over it pins the release. A
registry in "require signed" mode (``HEADRACE_REQUIRE_SIGNED=1`` with the trusted public
keys in ``HEADRACE_TRUSTED_KEYS``, a list of PEM files separated by ``:``) hands out
the files of a release only when one of those keys signed it: a row written straight
into the database, with any digest, cannot be loaded without a trusted private key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, select

from headrace.audit.keys import Ed25519Signer, Ed25519Verifier, load_ed25519_verifier
from headrace.errors import ConfigError, RegistryIntegrityError
from headrace.registry.tables import release_signatures

__all__ = [
    "REQUIRE_SIGNED_ENV",
    "TRUSTED_KEYS_ENV",
    "SigningPolicy",
    "check_signed",
    "release_payload",
    "sign_release",
]

REQUIRE_SIGNED_ENV = "HEADRACE_REQUIRE_SIGNED"
TRUSTED_KEYS_ENV = "HEADRACE_TRUSTED_KEYS"


def release_payload(digest: str) -> bytes:
    """The bytes a release signature signs (domain-separated from checkpoint payloads)."""
    return f"headrace-release-v1:{digest}".encode()


def sign_release(signer: Ed25519Signer, *, digest: str) -> dict[str, str]:
    """The signature columns of a release row (key id, algorithm, public key, signature)."""
    if not isinstance(signer, Ed25519Signer):
        raise ConfigError(
            f"Releases are signed with Ed25519 keys, not {type(signer).__name__}: pass "
            "--sign-key with a PEM file from `openssl genpkey -algorithm ed25519`."
        )
    return {
        "key_id": signer.key_id,
        "algorithm": signer.algorithm,
        "public_key": signer.public_raw.hex(),
        "signature": signer.sign(release_payload(digest)),
    }


@dataclass(frozen=True)
class SigningPolicy:
    """Whether unsigned releases may be loaded, and whose signatures count."""

    require_signed: bool = False
    trusted: tuple[Ed25519Verifier, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SigningPolicy:
        """Read ``HEADRACE_REQUIRE_SIGNED`` and ``HEADRACE_TRUSTED_KEYS``."""
        env = os.environ if environ is None else environ
        raw = env.get(REQUIRE_SIGNED_ENV, "").strip().lower()
        if raw not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ConfigError(f"{REQUIRE_SIGNED_ENV} must be 1 or 0, not {raw[:20]!r}.")
        require = raw in ("1", "true", "yes")
        paths = [p for p in env.get(TRUSTED_KEYS_ENV, "").split(os.pathsep) if p.strip()]
        trusted = tuple(load_ed25519_verifier(Path(p.strip())) for p in paths)
        if require and not trusted:
            raise ConfigError(
                f"{REQUIRE_SIGNED_ENV}=1 needs the public keys to trust: set "
                f"{TRUSTED_KEYS_ENV} to PEM files separated by '{os.pathsep}'."
            )
        return cls(require_signed=require, trusted=trusted)

    def accepts(self, digest: str, signatures: Sequence[tuple[str, str]]) -> bool:
        """Whether a (public key hex, signature hex) pair is a trusted key's signature."""
        payload = release_payload(digest)
        by_key = {v.public_raw.hex(): v for v in self.trusted}
        return any(
            key in by_key and by_key[key].verify(payload, signature)
            for key, signature in signatures
        )


def check_signed(
    conn: Connection, policy: SigningPolicy, *, name: str, version: int, digest: str
) -> None:
    """Raise `RegistryIntegrityError` unless a key `policy` trusts signed release `digest`."""
    rows = conn.execute(
        select(release_signatures.c.public_key, release_signatures.c.signature).where(
            (release_signatures.c.name == name) & (release_signatures.c.version == version)
        )
    ).all()
    if not policy.accepts(digest, [(r.public_key, r.signature) for r in rows]):
        what = "has no signature" if not rows else "has no valid signature by a trusted key"
        raise RegistryIntegrityError(
            f"Release '{name}:{version}' {what}, and this registry loads only signed releases "
            f"({REQUIRE_SIGNED_ENV}=1). Register it with --sign-key, or trust its key "
            f"in {TRUSTED_KEYS_ENV}."
        )
