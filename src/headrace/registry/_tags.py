"""Release tags: free-form ``tag -> value`` labels on a release (a drift monitor sets
``drift``), each change audited as ``release.tag`` in the caller's write transaction."""

from __future__ import annotations

from sqlalchemy import Connection, select

from headrace.audit.chain import append_record
from headrace.errors import ConfigError
from headrace.registry._records import Release, now
from headrace.registry.refs import ALIAS_PATTERN
from headrace.registry.tables import release_tags

__all__ = ["check_tag", "read_tags", "set_tag"]


def check_tag(tag: str) -> None:
    """Refuse a tag name that `ALIAS_PATTERN` does not match."""
    if not ALIAS_PATTERN.fullmatch(tag):
        raise ConfigError(
            f"Invalid tag '{tag}': tags start with a letter and use letters, digits, "
            "'_' and '-' (at most 64 characters)."
        )


def set_tag(conn: Connection, release: Release, *, tag: str, value: str, actor: str) -> None:
    """Set `tag` on `release` to `value` and audit the change (from the previous value)."""
    key = (
        (release_tags.c.name == release.name)
        & (release_tags.c.version == release.version)
        & (release_tags.c.tag == tag)
    )
    previous = conn.execute(select(release_tags.c.value).where(key)).scalar()
    stamp = {"value": value, "updated_at": now(), "updated_by": actor}
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
        actor=actor,
        action="release.tag",
        subject=release.ref,
        details={"tag": tag, "from": previous, "to": value},
    )


def read_tags(conn: Connection, release: Release) -> dict[str, str]:
    """Tag -> value of `release`."""
    rows = conn.execute(
        select(release_tags.c.tag, release_tags.c.value)
        .where((release_tags.c.name == release.name) & (release_tags.c.version == release.version))
        .order_by(release_tags.c.tag)
    )
    return {row.tag: row.value for row in rows}
