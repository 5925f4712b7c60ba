"""The hash chain on an in-memory SQLite database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, create_engine, text

from headrace.audit import GENESIS_HASH, append_record, iter_records, verify_chain
from headrace.audit.chain import metadata
from headrace.errors import AuditChainBrokenError


@pytest.fixture
def conn() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def test_records_link_to_their_predecessor(conn: Connection) -> None:
    first = append_record(conn, actor="a", action="register", subject="m:1", details={"x": 1})
    second = append_record(
        conn, actor="a", action="alias.set", subject="m@champion", details={"to": 1}
    )
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert verify_chain(conn) == 2
    assert [r.seq for r in iter_records(conn, subject="m")] == [1, 2]
    assert [r.action for r in iter_records(conn, action="register")] == ["register"]


def test_details_order_does_not_change_the_hash(conn: Connection) -> None:
    append_record(conn, actor="a", action="x", subject="s", details={"b": 2, "a": 1})
    stored = conn.execute(text("SELECT details FROM headrace_audit_log")).scalar_one()
    assert stored == '{"a":1,"b":2}'
    assert verify_chain(conn) == 1


def test_altered_details_are_found(conn: Connection) -> None:
    for i in range(3):
        append_record(conn, actor="a", action="register", subject=f"m:{i}", details={"i": i})
    conn.execute(text("UPDATE headrace_audit_log SET details = :d WHERE seq = 3"), {"d": '{"i":9}'})
    with pytest.raises(AuditChainBrokenError, match=r"#3 \(register m:2\).*altered"):
        verify_chain(conn)


def test_recomputed_hash_still_breaks_the_next_link(conn: Connection) -> None:
    """A forger who rehashes the record they changed is caught by the record after it."""
    from headrace.audit import record_hash

    for i in range(3):
        append_record(conn, actor="a", action="register", subject=f"m:{i}", details={"i": i})
    row = conn.execute(text("SELECT * FROM headrace_audit_log WHERE seq = 2")).one()
    forged = record_hash(
        seq=2,
        at=row.at,
        actor="mallory",
        action=row.action,
        subject=row.subject,
        details=row.details,
        prev_hash=row.prev_hash,
    )
    conn.execute(
        text("UPDATE headrace_audit_log SET actor='mallory', hash=:h WHERE seq=2"), {"h": forged}
    )
    with pytest.raises(AuditChainBrokenError, match=r"#3.*does not follow record #2"):
        verify_chain(conn)
