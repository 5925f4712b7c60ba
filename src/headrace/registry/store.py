"""The registry: releases, versions, aliases with their history, and the audit chain.

One class over SQLite (default) and PostgreSQL. Every mutation runs in one transaction
under a single write lock (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL advisory lock), and
appends its audit record inside that transaction: a crash leaves all of it or none.
Artifacts are uploaded before the transaction, content-addressed, so a crash there leaves
only unreferenced blobs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from headrace.audit.chain import GENESIS_HASH, AuditRecord, append_record, audit_table, iter_records
from headrace.audit.checkpoint import Checkpoint, check_against, make_checkpoint
from headrace.audit.keys import Signer, Verifier
from headrace.errors import (
    AuditError,
    ConfigError,
    RegistryError,
    RegistryIntegrityError,
    RegistryUnavailableError,
    ReleaseError,
    ReleaseNotFoundError,
)
from headrace.redaction import redact_url
from headrace.registry._copies import COPIES as _COPIES
from headrace.registry._copies import materialize
from headrace.registry._engine import create_engine_for, first_line, is_connect_error
from headrace.registry.anchors import CheckpointStore
from headrace.registry.artifacts import ArtifactStore, open_artifact_store
from headrace.registry.integrity import ChainState, verify_registry
from headrace.registry.refs import ALIAS_PATTERN, DEFAULT_ALIAS, ReleaseRef, parse_ref
from headrace.registry.signing import SigningPolicy, check_signed, sign_release
from headrace.registry.tables import (
    alias_events,
    aliases,
    migrate,
    release_signatures,
    release_tags,
    releases,
)
from headrace.release.bundle import ReleaseDraft, file_sha256, validate_name
from headrace.release.identity import content_digest
from headrace.release.manifest import (
    Manifest,
    canonical_json,
    decode_manifest,
    manifest_digest,
)

__all__ = [
    "ALIAS_CHANNEL",
    "VERIFICATIONS",
    "AliasEvent",
    "Registry",
    "Release",
    "ReleaseSummary",
]

VERIFICATIONS = ("passed", "skipped", "failed")
"""What `Registry.register` may record of a release's verification."""

ALIAS_CHANNEL = "headrace_alias"
"""PostgreSQL NOTIFY channel of alias moves; the payload is ``name@alias:version``."""

_PG_LOCK_KEY = 0x68656164  # "head": one advisory lock serialises registry writes


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


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


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One move of an alias: who moved it, when, from which version to which, and why."""

    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    kind: str
    actor: str
    at: str
    reason: str


class Registry:
    """Names, versions, aliases and lineage of releases, plus their files.

    Parameters
    ----------
    url
        ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.
    artifacts
        An `ArtifactStore` or its URL.
    actor
        Who mutations are attributed to.
    cache_dir
        Where `fetch` keeps verified copies of release files.
    signing
        Whether `fetch` refuses releases no trusted key signed (default: it does not).
    """

    def __init__(
        self,
        url: str,
        *,
        artifacts: ArtifactStore | str,
        actor: str,
        cache_dir: Path,
        signing: SigningPolicy | None = None,
    ) -> None:
        self.url = url
        self.signing = signing or SigningPolicy()
        self.actor = actor
        self.cache_dir = cache_dir
        self.artifacts = open_artifact_store(artifacts) if isinstance(artifacts, str) else artifacts
        self._engine = create_engine_for(url)
        self._postgres = self._engine.dialect.name == "postgresql"
        self._migrated = False

    # -- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        """Release database connections."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        try:
            if not self._migrated:
                # Its own transaction: a failing first operation must not roll it back.
                with self._engine.begin() as conn:
                    self._lock(conn)
                    migrate(conn, now=_now(), where=redact_url(self.url))
                self._migrated = True
            with self._engine.begin() as conn:
                if write:
                    self._lock(conn)
                yield conn
        except OperationalError as exc:
            if exc.connection_invalidated or is_connect_error(exc):
                raise RegistryUnavailableError(
                    f"Cannot reach registry '{redact_url(self.url)}': "
                    f"{first_line(exc.orig)}. Check the server is running and the URL "
                    "(HEADRACE_REGISTRY) is right; `headrace doctor` checks every service."
                ) from exc
            raise RegistryError(
                f"Registry '{redact_url(self.url)}' failed: {first_line(exc.orig)}"
            ) from exc
        except DBAPIError as exc:
            raise RegistryError(
                f"Registry '{redact_url(self.url)}' failed: {first_line(exc.orig)}"
            ) from exc

    def _lock(self, conn: Connection) -> None:
        """Serialise writers (SQLite already did with BEGIN IMMEDIATE)."""
        if self._postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})

    def check(self) -> int:
        """Connect, migrate if needed, and return the number of releases (for doctor)."""
        with self._transaction(write=False) as conn:
            return int(conn.execute(select(func.count()).select_from(releases)).scalar_one())

    # -- releases ---------------------------------------------------------------------

    def register(
        self,
        draft: ReleaseDraft,
        *,
        alias: str | None = None,
        parent: str | None = None,
        reason: str = "registered",
        allow_duplicate: bool = False,
        verification: str | None = None,
        sign_key: Any = None,
    ) -> Release:
        """Upload the draft's files, then record the release atomically.

        Parameters
        ----------
        alias
            Point this alias at the new release in the same transaction.
        parent
            The release this one derives from (``name:version`` or ``name@alias``);
            defaults to the name's current champion, if any.
        allow_duplicate
            Make a new version even when the name already has a release of identical
            content; otherwise that release is returned (``duplicate_of`` set) and
            nothing new is written (an `alias` still moves to it).
        verification
            ``passed``, ``skipped`` or ``failed``: whether the model scored its own
            reference sample before registration; an alias refuses a release that did
            not pass (see `set_alias`). None when the caller did not check.
        sign_key
            An Ed25519 private key (``cryptography``) to sign the release digest with.
        """
        validate_name(draft.name)
        if alias is not None:
            _check_alias(alias)
        if verification is not None and verification not in VERIFICATIONS:
            raise ConfigError(
                f"Invalid verification {verification!r}: use one of {', '.join(VERIFICATIONS)}."
            )
        for digest, source in draft.sources.items():
            if file_sha256(source) != digest:
                raise ReleaseError(f"File '{source}' changed after it was hashed; register again.")
            self.artifacts.put_file(source, digest)
        with self._transaction(write=True) as conn:
            parent_release = self._resolve_parent(conn, draft.name, parent)
            latest = conn.execute(
                select(func.max(releases.c.version)).where(releases.c.name == draft.name)
            ).scalar()
            version = int(latest or 0) + 1
            manifest = draft.manifest(
                version=version,
                created_at=_now(),
                created_by=self.actor,
                parent=parent_release.ref if parent_release else None,
                parent_digest=parent_release.digest if parent_release else None,
            )
            content = content_digest(manifest)
            if not allow_duplicate:
                same = conn.execute(
                    select(func.min(releases.c.version)).where(
                        (releases.c.name == draft.name) & (releases.c.content_digest == content)
                    )
                ).scalar()
                if same is not None:
                    existing = self._get(conn, ReleaseRef(draft.name, version=int(same)))
                    if alias is not None:
                        self._check_verified(conn, existing, force=False)
                        self._move_alias(
                            conn, draft.name, alias, existing.version, kind="set", reason=reason
                        )
                    return Release(
                        manifest=existing.manifest,
                        digest=existing.digest,
                        duplicate_of=existing.ref,
                    )
            digest = manifest_digest(manifest)
            conn.execute(
                releases.insert().values(
                    name=manifest.name,
                    version=version,
                    digest=digest,
                    flavor=manifest.model.flavor,
                    manifest=canonical_json(manifest),
                    created_at=manifest.created_at,
                    created_by=self.actor,
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
                        version=version,
                        signed_at=manifest.created_at,
                        signed_by=self.actor,
                        **signed,
                    )
                )
                details["signed_by_key"] = signed["key_id"]
            append_record(
                conn, actor=self.actor, action="register", subject=manifest.ref, details=details
            )
            release = Release(manifest=manifest, digest=digest)
            if alias is not None:
                self._check_verified(conn, release, force=False)
                self._move_alias(conn, draft.name, alias, version, kind="set", reason=reason)
        return release

    def _resolve_parent(self, conn: Connection, name: str, parent: str | None) -> Release | None:
        if parent is not None:
            return self._get(conn, parse_ref(parent))
        current = conn.execute(
            select(aliases.c.version).where(
                (aliases.c.name == name) & (aliases.c.alias == DEFAULT_ALIAS)
            )
        ).scalar()
        return None if current is None else self._get(conn, ReleaseRef(name, version=current))

    def get(self, ref: str | ReleaseRef) -> Release:
        """The release a reference names, its manifest checked against its digest."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._transaction(write=False) as conn:
            return self._get(conn, parsed)

    def _get(self, conn: Connection, ref: ReleaseRef) -> Release:
        version = ref.version
        if version is None:
            version = conn.execute(
                select(aliases.c.version).where(
                    (aliases.c.name == ref.name) & (aliases.c.alias == ref.alias)
                )
            ).scalar()
            if version is None:
                known = self._names(conn)
                hint = (
                    f"Set it with `headrace alias set {ref.name} {ref.alias} VERSION`"
                    if ref.name in known
                    else f"Known names: {', '.join(sorted(known)) or 'none'}"
                )
                raise ReleaseNotFoundError(
                    f"Release '{ref}' not found in registry '{redact_url(self.url)}': "
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
                f"'{redact_url(self.url)}'. Run `headrace releases list {ref.name}`."
            )
        manifest = _stored_manifest(row.manifest, ref=f"{ref.name}:{version}", url=self.url)
        actual = manifest_digest(manifest)
        if actual != row.digest:
            raise RegistryIntegrityError(
                f"Release '{ref.name}:{version}' in registry '{redact_url(self.url)}' was "
                f"altered: its manifest hashes to {actual} but was registered as {row.digest}. "
                "Run `headrace audit verify` and restore the registry from a backup."
            )
        return Release(manifest=manifest, digest=row.digest)

    @staticmethod
    def _names(conn: Connection) -> set[str]:
        return {str(n) for n in conn.execute(select(releases.c.name).distinct()).scalars()}

    def list_releases(self, name: str | None = None) -> list[ReleaseSummary]:
        """Releases (of one name, or all) in name and version order, with their aliases."""
        with self._transaction(write=False) as conn:
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

    # -- aliases ----------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, int]:
        """Current alias -> version for a name."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(aliases.c.alias, aliases.c.version).where(aliases.c.name == name)
            )
            return {row.alias: int(row.version) for row in rows}

    def alias_revision(self) -> int:
        """A number that changes whenever any alias moves (cheap enough to poll each second).

        It is the id of the latest alias event, 0 before the first.
        """
        with self._transaction(write=False) as conn:
            return int(conn.execute(select(func.max(alias_events.c.id))).scalar() or 0)

    def alias_targets(self, alias: str = DEFAULT_ALIAS) -> dict[str, int]:
        """Name -> version for every name that has `alias`."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                select(aliases.c.name, aliases.c.version).where(aliases.c.alias == alias)
            )
            return {row.name: int(row.version) for row in rows}

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        """Every move of a name's aliases (or one alias), oldest first."""
        with self._transaction(write=False) as conn:
            return self._history(conn, name, alias)

    @staticmethod
    def _history(conn: Connection, name: str, alias: str | None) -> list[AliasEvent]:
        query = select(alias_events).where(alias_events.c.name == name)
        if alias is not None:
            query = query.where(alias_events.c.alias == alias)
        return [
            AliasEvent(
                name=row.name,
                alias=row.alias,
                from_version=row.from_version,
                to_version=row.to_version,
                kind=row.kind,
                actor=row.actor,
                at=row.at,
                reason=row.reason,
            )
            for row in conn.execute(query.order_by(alias_events.c.id))
        ]

    def set_alias(
        self, name: str, alias: str, version: int, *, reason: str = "", force: bool = False
    ) -> AliasEvent:
        """Point `alias` at `name:version` (which must exist).

        A release that did not pass verification at registration is refused unless
        `force` is set with a `reason`; the forced move is audited as such.
        """
        _check_alias(alias)
        if force and not reason.strip():
            raise ConfigError(
                f"Forcing '{name}@{alias}' to version {version} needs a reason: "
                'pass --reason "why this unverified release may serve".'
            )
        with self._transaction(write=True) as conn:
            release = self._get(conn, ReleaseRef(name, version=version))
            forced = self._check_verified(conn, release, force=force)
            return self._move_alias(
                conn, name, alias, version, kind="set", reason=reason, forced=forced
            )

    def _check_verified(self, conn: Connection, release: Release, *, force: bool) -> str | None:
        """Refuse an alias move onto a release that did not pass verification; return its
        verification state when `force` overrides the refusal (for the audit record)."""
        state = conn.execute(
            select(releases.c.verification).where(
                (releases.c.name == release.name) & (releases.c.version == release.version)
            )
        ).scalar()
        if state is None or state == "passed":
            return None
        if force:
            return str(state)
        raise ReleaseError(
            f"Release '{release.ref}' {'failed' if state == 'failed' else 'skipped'} "
            "verification at registration, so no alias may point at it. Re-register it "
            f'with verification, or pass --force --reason "..." (audited).'
        )

    def rollback(self, name: str, *, to: int | None = None, reason: str = "") -> AliasEvent:
        """Move `champion` back to its previous target, or to version `to`."""
        with self._transaction(write=True) as conn:
            current = conn.execute(
                select(aliases.c.version).where(
                    (aliases.c.name == name) & (aliases.c.alias == DEFAULT_ALIAS)
                )
            ).scalar()
            # A target named by hand is held to verification like `alias set`; one from the
            # alias's own history already passed that check when it was set.
            explicit = to is not None
            if to is None:
                # Targets form a stack: a set pushes, a rollback pops, so repeated
                # rollbacks walk further back instead of bouncing between two versions.
                stack: list[int] = []
                for moved in self._history(conn, name, DEFAULT_ALIAS):
                    if moved.kind == "rollback" and stack:
                        stack.pop()
                    elif moved.to_version is not None and moved.kind != "rollback":
                        stack.append(moved.to_version)
                if len(stack) < 2:
                    raise ReleaseNotFoundError(
                        f"'{name}@{DEFAULT_ALIAS}' has no previous target to roll back to. "
                        f"Use `headrace rollback {name} --to VERSION`."
                    )
                to = stack[-2]
            target = self._get(conn, ReleaseRef(name, version=to))
            if explicit:
                self._check_verified(conn, target, force=False)
            if current == to:
                raise RegistryError(
                    f"'{name}@{DEFAULT_ALIAS}' already points at version {to}; "
                    "nothing to roll back."
                )
            return self._move_alias(
                conn, name, DEFAULT_ALIAS, to, kind="rollback", reason=reason or "rollback"
            )

    def _move_alias(
        self,
        conn: Connection,
        name: str,
        alias: str,
        version: int,
        *,
        kind: str,
        reason: str,
        forced: str | None = None,
    ) -> AliasEvent:
        now = _now()
        current = conn.execute(
            select(aliases.c.version).where((aliases.c.name == name) & (aliases.c.alias == alias))
        ).scalar()
        if current is None:
            conn.execute(
                aliases.insert().values(
                    name=name, alias=alias, version=version, updated_at=now, updated_by=self.actor
                )
            )
        else:
            conn.execute(
                aliases.update()
                .where((aliases.c.name == name) & (aliases.c.alias == alias))
                .values(version=version, updated_at=now, updated_by=self.actor)
            )
        moved = AliasEvent(
            name=name,
            alias=alias,
            from_version=current,
            to_version=version,
            kind=kind,
            actor=self.actor,
            at=now,
            reason=reason,
        )
        conn.execute(
            alias_events.insert().values(
                name=name,
                alias=alias,
                from_version=current,
                to_version=version,
                kind=kind,
                actor=self.actor,
                at=now,
                reason=reason,
            )
        )
        if self._postgres:
            # Delivered at commit to every `LISTEN headrace_alias` session (serving's hot
            # swap), so a server notices a promotion or rollback at once instead of polling.
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": ALIAS_CHANNEL, "payload": f"{name}@{alias}:{version}"},
            )
        details: dict[str, Any] = {"from": current, "to": version, "reason": reason}
        if forced is not None:
            details["forced"] = forced  # the verification state the move overrode
        append_record(
            conn,
            actor=self.actor,
            action="rollback" if kind == "rollback" else "alias.set",
            subject=f"{name}@{alias}",
            details=details,
        )
        return moved

    # -- tags -------------------------------------------------------------------------

    def tag_release(self, ref: str | ReleaseRef, tag: str, value: str) -> Release:
        """Set `tag` on the release `ref` names to `value` (a drift monitor sets
        ``drift``), audited as ``release.tag`` in the same transaction."""
        if not ALIAS_PATTERN.fullmatch(tag):
            raise ConfigError(
                f"Invalid tag '{tag}': tags start with a letter and use letters, digits, "
                "'_' and '-' (at most 64 characters)."
            )
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._transaction(write=True) as conn:
            release = self._get(conn, parsed)
            key = (
                (release_tags.c.name == release.name)
                & (release_tags.c.version == release.version)
                & (release_tags.c.tag == tag)
            )
            previous = conn.execute(select(release_tags.c.value).where(key)).scalar()
            stamp = {"value": value, "updated_at": _now(), "updated_by": self.actor}
            if previous is None:
                conn.execute(
                    release_tags.insert().values(
                        name=release.name, version=release.version, tag=tag, **stamp
                    )
                )
            else:
                conn.execute(release_tags.update().where(key).values(**stamp))
            append_record(
                conn,
                actor=self.actor,
                action="release.tag",
                subject=release.ref,
                details={"tag": tag, "from": previous, "to": value},
            )
        return release

    def release_tags(self, ref: str | ReleaseRef) -> dict[str, str]:
        """Tag -> value of the release `ref` names."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._transaction(write=False) as conn:
            release = self._get(conn, parsed)
            rows = conn.execute(
                select(release_tags.c.tag, release_tags.c.value)
                .where(
                    (release_tags.c.name == release.name)
                    & (release_tags.c.version == release.version)
                )
                .order_by(release_tags.c.tag)
            )
            return {row.tag: row.value for row in rows}

    # -- files ------------------------------------------------------------------------

    def fetch(self, release: Release) -> Path:
        """A directory of the release's files, each checked against its sha256.

        Files are fetched once into the shared cache; from there each is read once,
        hashed while it is copied into a directory private to this process, and only
        that copy is handed out (see `headrace.registry._copies`): a file swapped in the
        cache after the check can never be loaded (or unpickled). The private copy is
        reused for the life of the process.
        """
        if self.signing.require_signed:
            self._check_signed(release)
        return materialize(
            release.manifest.all_files(),
            digest=release.digest,
            ref=release.ref,
            cache_dir=self.cache_dir,
            artifacts=self.artifacts,
        )

    def _check_signed(self, release: Release) -> None:
        with self._transaction(write=False) as conn:
            check_signed(
                conn,
                self.signing,
                name=release.name,
                version=release.version,
                digest=release.digest,
            )

    def clear_cache(self, release: Release) -> None:
        """Forget the cached and the private copies of a release's files."""
        _COPIES.forget(release.digest)
        shutil.rmtree(self.cache_dir / release.digest, ignore_errors=True)

    # -- audit ------------------------------------------------------------------------

    def audit_log(
        self, *, subject: str | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        """Audit records in order (optionally one subject's, e.g. ``fraud``)."""
        with self._transaction(write=False) as conn:
            return list(iter_records(conn, subject=subject, action=action))

    def verify_audit(self) -> int:
        """Walk the audit chain and check every release, alias and tag against it; return
        the chain's length.

        Raises
        ------
        AuditChainBrokenError
            A record was altered, removed or reordered.
        RegistryIntegrityError
            A release, alias or tag disagrees with the chain (see `verify_registry`).
        """
        return self.verify_integrity().records

    def verify_integrity(self) -> ChainState:
        """`verify_audit` with what it found: records, head hash, releases checked."""
        with self._transaction(write=False) as conn:
            return verify_registry(conn)

    def write_checkpoint(self, store: CheckpointStore, *, signer: Signer) -> tuple[Checkpoint, str]:
        """Verify the registry, then write a signed checkpoint of its chain to `store`."""
        state = self.verify_integrity()
        checkpoint = make_checkpoint(
            seq=state.records,
            head=state.head or GENESIS_HASH,
            registry=redact_url(self.url),
            signer=signer,
        )
        return checkpoint, store.write(checkpoint)

    def verify_checkpoint(
        self, store: CheckpointStore, *, verifier: Verifier
    ) -> tuple[ChainState, Checkpoint]:
        """`verify_integrity`, then check the chain extends the newest checkpoint in `store`.

        Raises
        ------
        AuditError
            `store` has no checkpoint, or its signature is not `verifier`'s.
        AuditChainBrokenError
            The chain is shorter than the checkpoint or differs from it.
        """
        found = store.latest()
        if found is None:
            raise AuditError(
                f"No checkpoint in '{store.url}': write one with `headrace audit checkpoint` "
                "(and keep writing them) before verifying against it."
            )
        checkpoint, where = found
        with self._transaction(write=False) as conn:
            hashes = [
                str(h)
                for h in conn.execute(select(audit_table.c.hash).order_by(audit_table.c.seq))
                .scalars()
                .all()
            ]
            # The checkpoint first: an emptied registry fails as "shorter", which says more
            # than the (empty, consistent) tables would.
            check_against(checkpoint, verifier=verifier, where=f"'{where}'", hashes=hashes)
            state = verify_registry(conn)
        return state, checkpoint

    def record_event(self, action: str, subject: str, details: dict[str, Any]) -> AuditRecord:
        """Append an event that is not a registry mutation (a drift alarm, a rollout
        decision) to the audit chain, under the same write lock as every mutation."""
        with self._transaction(write=True) as conn:
            return append_record(
                conn, actor=self.actor, action=action, subject=subject, details=details
            )


def _check_alias(alias: str) -> None:
    if not ALIAS_PATTERN.fullmatch(alias):
        raise ConfigError(
            f"Invalid alias '{alias}': aliases start with a letter and use letters, digits, "
            "'_' and '-' (at most 64 characters)."
        )
