"""Release rows: stored on registration, read back with each manifest checked against
its digest.

`Registry` owns the transactions these run in, the audit records and the alias moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from headrace._redact import redact_url
from headrace.errors import ConfigError, RegistryIntegrityError, ReleaseNotFoundError
from headrace.registry.refs import DEFAULT_ALIAS, ReleaseRef, parse_ref
from headrace.registry.signing import sign_release
from headrace.registry.tables import aliases, release_signatures, releases
from headrace.release.identity import content_digest
from headrace.release.manifest import Manifest, canonical_json, decode_manifest, manifest_digest

__all__ = [
    "VERIFICATIONS",
    "Release",
    "ReleaseSummary",
    "check_verification",
    "count_releases",
    "first_with_content",
    "get_release",
    "insert_release",
    "list_summaries",
    "next_version",
    "now",
    "resolve_parent",
]

VERIFICATIONS = ("passed", "skipped", "failed")
"""What `Registry.register` may record of a release's verification."""


def check_verification(verification: str | None) -> None:
    """Refuse a verification state other than None or one of `VERIFICATIONS`."""
    if verification is not None and verification not in VERIFICATIONS:
        raise ConfigError(
            f"Invalid verification {verification!r}: use one of {', '.join(VERIFICATIONS)}."
        )


def count_releases(conn: Connection) -> int:
    """How many releases the registry holds."""
    return int(conn.execute(select(func.count()).select_from(releases)).scalar_one())


def now() -> str:
    """The registry's timestamp: UTC, ISO 8601, to the microsecond."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _stored_manifest(raw: object, *, ref: str, url: str) -> Manifest:
    """A manifest row as stored; unreadable (corrupted bytes, edited by hand) is tampering.

    A row stored as TEXT (a hand-made or migrated table) reads like its BLOB.
    """
    import msgspec

    try:
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)  # type: ignore[call-overload]
        return decode_manifest(data)
    except (TypeError, ValueError, msgspec.MsgspecError) as exc:
        reason = " ".join(str(exc).split())[:80]
        raise RegistryIntegrityError(
            f"Release '{ref}' in registry '{redact_url(url)}' has an unreadable manifest "
            f"({reason}). Run `headrace audit verify` and restore the registry from a backup."
        ) from None


@dataclass(frozen=True, slots=True)
class Release:
    """A registered release: its manifest and digest, verified when read."""

    manifest: Manifest
    digest: str
    duplicate_of: str | None = None
    """Set by `Registry.register` when the content was already registered (that ref)."""

    @property
    def content_digest(self) -> str:
        """What the release is, apart from who registered it when (see `content_digest`)."""
        return content_digest(self.manifest)

    @property
    def name(self) -> str:
        """The release name."""
        return self.manifest.name

    @property
    def version(self) -> int:
        """The version, monotonic per name."""
        return self.manifest.version

    @property
    def ref(self) -> str:
        """``name:version``."""
        return self.manifest.ref


@dataclass(frozen=True, slots=True)
class ReleaseSummary:
    """One row of `Registry.list`."""

    name: str
    version: int
    digest: str
    flavor: str
    created_at: str
    created_by: str
    aliases: tuple[str, ...]


def resolve_parent(conn: Connection, *, name: str, parent: str | None, url: str) -> Release | None:
    """The release `parent` names, else the name's current champion (None without one)."""
    if parent is not None:
        return get_release(conn, parse_ref(parent), url=url)
    current = conn.execute(
        select(aliases.c.version).where(
            (aliases.c.name == name) & (aliases.c.alias == DEFAULT_ALIAS)
        )
    ).scalar()
    return (
        None if current is None else get_release(conn, ReleaseRef(name, version=current), url=url)
    )


def get_release(conn: Connection, ref: ReleaseRef, *, url: str) -> Release:
    """The release `ref` names in registry `url`, its manifest checked against its digest."""
    version = ref.version
    if version is None:
        version = conn.execute(
            select(aliases.c.version).where(
                (aliases.c.name == ref.name) & (aliases.c.alias == ref.alias)
            )
        ).scalar()
        if version is None:
            known = _names(conn)
            hint = (
                f"Set it with `headrace alias set {ref.name} {ref.alias} VERSION`"
                if ref.name in known
                else f"Known names: {', '.join(sorted(known)) or 'none'}"
            )
            raise ReleaseNotFoundError(
                f"Release '{ref}' not found in registry '{redact_url(url)}': "
                f"no alias '{ref.alias}' for '{ref.name}'. {hint}."
            )
    row = conn.execute(
        select(releases.c.digest, releases.c.manifest).where(
            (releases.c.name == ref.name) & (releases.c.version == version)
        )
    ).first()
    if row is None:
        raise ReleaseNotFoundError(
            f"Release '{ref.name}:{version}' not found in registry "
            f"'{redact_url(url)}'. Run `headrace releases list {ref.name}`."
        )
    manifest = _stored_manifest(row.manifest, ref=f"{ref.name}:{version}", url=url)
    actual = manifest_digest(manifest)
    if actual != row.digest:
        raise RegistryIntegrityError(
            f"Release '{ref.name}:{version}' in registry '{redact_url(url)}' was "
            f"altered: its manifest hashes to {actual} but was registered as {row.digest}. "
            "Run `headrace audit verify` and restore the registry from a backup."
        )
    return Release(manifest=manifest, digest=row.digest)


def _names(conn: Connection) -> set[str]:
    return {str(n) for n in conn.execute(select(releases.c.name).distinct()).scalars()}


def list_summaries(conn: Connection, name: str | None) -> list[ReleaseSummary]:
    """Releases (of one name, or all) in name and version order, with their aliases."""
    query = select(
        releases.c.name,
        releases.c.version,
        releases.c.digest,
        releases.c.flavor,
        releases.c.created_at,
        releases.c.created_by,
    ).order_by(releases.c.name, releases.c.version)
    alias_query = select(aliases.c.name, aliases.c.alias, aliases.c.version)
    if name is not None:
        query = query.where(releases.c.name == name)
        alias_query = alias_query.where(aliases.c.name == name)
    by_release: dict[tuple[str, int], list[str]] = {}
    for row in conn.execute(alias_query):
        by_release.setdefault((row.name, row.version), []).append(row.alias)
    return [
        ReleaseSummary(
            name=row.name,
            version=row.version,
            digest=row.digest,
            flavor=row.flavor,
            created_at=row.created_at,
            created_by=row.created_by,
            aliases=tuple(sorted(by_release.get((row.name, row.version), []))),
        )
        for row in conn.execute(query)
    ]


def next_version(conn: Connection, name: str) -> int:
    """The version a new release of `name` gets: one past the newest (1 for the first)."""
    latest = conn.execute(
        select(func.max(releases.c.version)).where(releases.c.name == name)
    ).scalar()
    return int(latest or 0) + 1


def first_with_content(conn: Connection, *, name: str, content: str) -> int | None:
    """The oldest version of `name` whose content digest is `content`, if any."""
    same = conn.execute(
        select(func.min(releases.c.version)).where(
            (releases.c.name == name) & (releases.c.content_digest == content)
        )
    ).scalar()
    return None if same is None else int(same)


def insert_release(
    conn: Connection,
    manifest: Manifest,
    *,
    digest: str,
    content: str,
    verification: str | None,
    actor: str,
    sign_key: Any,
) -> dict[str, Any]:
    """Store a new release row (and its signature, with `sign_key`); return the details
    its ``register`` audit record carries, which the caller appends in this transaction."""
    conn.execute(
        releases.insert().values(
            name=manifest.name,
            version=manifest.version,
            digest=digest,
            flavor=manifest.model.flavor,
            manifest=canonical_json(manifest),
            created_at=manifest.created_at,
            created_by=actor,
            content_digest=content,
            verification=verification,
        )
    )
    details: dict[str, Any] = {
        "digest": digest,
        "content_digest": content,
        "flavor": manifest.model.flavor,
        "data_sha256": manifest.data.sha256 if manifest.data else None,
        "parent": manifest.parent,
        "code_version": manifest.code_version,
        "verification": verification,
        "files": {entry.path: entry.sha256 for entry in manifest.all_files()},
    }
    if sign_key is not None:
        signed = sign_release(sign_key, digest=digest)
        conn.execute(
            release_signatures.insert().values(
                name=manifest.name,
                version=manifest.version,
                signed_at=manifest.created_at,
                signed_by=actor,
                **signed,
            )
        )
        details["signed_by_key"] = signed["key_id"]
    return details
