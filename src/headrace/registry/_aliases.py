"""Aliases and their history: moves, rollbacks, and the verification an alias move needs.

Every move updates the alias, appends an `AliasEvent` row and an audit record, and on
PostgreSQL notifies `ALIAS_CHANNEL`, all in the caller's write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, text

from headrace.audit.chain import append_record
from headrace.errors import ConfigError, RegistryError, ReleaseError, ReleaseNotFoundError
from headrace.registry._records import Release, get_release, now
from headrace.registry.refs import ALIAS_PATTERN, DEFAULT_ALIAS, ReleaseRef
from headrace.registry.tables import alias_events, aliases, releases

__all__ = [
    "ALIAS_CHANNEL",
    "AliasEvent",
    "AliasMoves",
    "alias_revision",
    "alias_targets",
    "check_alias",
    "check_forced",
    "check_verified",
    "current_aliases",
    "history",
    "rollback_target",
]

ALIAS_CHANNEL = "headrace_alias"
"""PostgreSQL NOTIFY channel of alias moves; the payload is ``name@alias:version``."""


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


def check_alias(alias: str) -> None:
    """Refuse an alias name that `ALIAS_PATTERN` does not match."""
    if not ALIAS_PATTERN.fullmatch(alias):
        raise ConfigError(
            f"Invalid alias '{alias}': aliases start with a letter and use letters, digits, "
            "'_' and '-' (at most 64 characters)."
        )


def check_forced(*, name: str, alias: str, version: int, force: bool, reason: str) -> None:
    """Refuse a forced move without a reason: the audit record must say why."""
    if force and not reason.strip():
        raise ConfigError(
            f"Forcing '{name}@{alias}' to version {version} needs a reason: "
            'pass --reason "why this unverified release may serve".'
        )


def current_aliases(conn: Connection, name: str) -> dict[str, int]:
    """Current alias -> version for a name."""
    rows = conn.execute(select(aliases.c.alias, aliases.c.version).where(aliases.c.name == name))
    return {row.alias: int(row.version) for row in rows}


def alias_revision(conn: Connection) -> int:
    """The id of the latest alias event, 0 before the first."""
    return int(conn.execute(select(func.max(alias_events.c.id))).scalar() or 0)


def alias_targets(conn: Connection, alias: str) -> dict[str, int]:
    """Name -> version for every name that has `alias`."""
    rows = conn.execute(select(aliases.c.name, aliases.c.version).where(aliases.c.alias == alias))
    return {row.name: int(row.version) for row in rows}


def history(conn: Connection, name: str, alias: str | None) -> list[AliasEvent]:
    """Every move of a name's aliases (or one alias), oldest first."""
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


def check_verified(conn: Connection, release: Release, *, force: bool) -> str | None:
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


def rollback_target(conn: Connection, *, name: str, to: int | None, url: str) -> int:
    """The version a rollback of `name@champion` moves to: `to`, else the previous target.

    A target named by hand is held to verification like `alias set`; one from the
    alias's own history already passed that check when it was set.
    """
    current = conn.execute(
        select(aliases.c.version).where(
            (aliases.c.name == name) & (aliases.c.alias == DEFAULT_ALIAS)
        )
    ).scalar()
    explicit = to is not None
    if to is None:
        # Targets form a stack: a set pushes, a rollback pops, so repeated
        # rollbacks walk further back instead of bouncing between two versions.
        stack: list[int] = []
        for moved in history(conn, name, DEFAULT_ALIAS):
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
    target = get_release(conn, ReleaseRef(name, version=to), url=url)
    if explicit:
        check_verified(conn, target, force=False)
    if current == to:
        raise RegistryError(
            f"'{name}@{DEFAULT_ALIAS}' already points at version {to}; nothing to roll back."
        )
    return to


@dataclass(frozen=True, slots=True)
class AliasMoves:
    """Alias moves attributed to `actor`; with `notify` (PostgreSQL) each is announced on
    `ALIAS_CHANNEL` at commit."""

    actor: str
    notify: bool

    def move(
        self,
        conn: Connection,
        *,
        name: str,
        alias: str,
        version: int,
        reason: str,
        kind: str = "set",
        forced: str | None = None,
    ) -> AliasEvent:
        """Point `name@alias` at `version`, record the move and audit it."""
        at = now()
        current = conn.execute(
            select(aliases.c.version).where((aliases.c.name == name) & (aliases.c.alias == alias))
        ).scalar()
        if current is None:
            conn.execute(
                aliases.insert().values(
                    name=name, alias=alias, version=version, updated_at=at, updated_by=self.actor
                )
            )
        else:
            conn.execute(
                aliases.update()
                .where((aliases.c.name == name) & (aliases.c.alias == alias))
                .values(version=version, updated_at=at, updated_by=self.actor)
            )
        moved = AliasEvent(
            name=name,
            alias=alias,
            from_version=current,
            to_version=version,
            kind=kind,
            actor=self.actor,
            at=at,
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
                at=at,
                reason=reason,
            )
        )
        if self.notify:
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
