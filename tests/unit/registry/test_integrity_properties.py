"""Property tests at the integrity inputs an attacker controls: a checkout's .git files and
a checkpoint file (whatever the bytes, a value or a one-line `AuditError`, never another
exception), and the content digest (blind to who, when and which version; not to content).
Examples are bounded so CI spends seconds here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.audit.checkpoint import Checkpoint
from headrace.audit.keys import HmacKey
from headrace.errors import AuditError
from headrace.registry.anchors import FileCheckpointStore
from headrace.release.bundle import detect_code_version
from headrace.release.config import ReleaseConfig
from headrace.release.features import FeatureSpec
from headrace.release.identity import content_digest
from headrace.release.manifest import FileEntry, Manifest, ModelSpec
from headrace.release.schema import Field, Schema

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_OID = "a" * 40


def _index(entries: bytes, count: int, version: int) -> bytes:
    return b"DIRC" + version.to_bytes(4, "big") + count.to_bytes(4, "big") + entries


@_SETTINGS
@given(
    head=st.one_of(
        st.binary(max_size=80),
        st.sampled_from([b"ref: refs/heads/main\n", f"{_OID}\n".encode(), b"ref: refs/../x"]),
    ),
    ref=st.binary(max_size=60),
    packed=st.binary(max_size=200),
    index=st.one_of(
        st.binary(max_size=300),
        st.builds(
            _index,
            st.binary(max_size=300),
            st.integers(min_value=0, max_value=2**32 - 1),
            st.sampled_from([2, 3, 4]),
        ),
    ),
)
def test_any_git_files_give_a_version_or_none(
    head: bytes, ref: bytes, packed: bytes, index: bytes
) -> None:
    with tempfile.TemporaryDirectory() as raw:
        root = Path(raw)
        git = root / ".git"
        (git / "refs" / "heads").mkdir(parents=True)
        (git / "HEAD").write_bytes(head)
        (git / "refs" / "heads" / "main").write_bytes(ref)
        (git / "packed-refs").write_bytes(packed)
        (git / "index").write_bytes(index)
        (root / "tracked.txt").write_text("x")
        version = detect_code_version(root)
    assert version is None or version.split("-")[0] in (_OID, ref.decode(errors="replace").strip())


@_SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda seq, head, sig: msgspec.json.encode(
                {
                    "seq": seq,
                    "head": head,
                    "at": "t",
                    "registry": "r",
                    "algorithm": "hmac-sha256",
                    "key_id": HmacKey(b"k" * 16).key_id,
                    "signature": sig,
                }
            ),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.text(max_size=70),
            st.text(max_size=70),
        ),
    )
)
def test_any_checkpoint_file_is_read_or_refused_in_one_line(body: bytes) -> None:
    with tempfile.TemporaryDirectory() as raw:
        root = Path(raw)
        (root / "checkpoint-000000000001-x.json").write_bytes(body)
        try:
            found = FileCheckpointStore(root).latest()
        except AuditError as exc:
            assert "\n" not in str(exc)
            return
    assert found is not None and isinstance(found[0], Checkpoint)


def _manifest(**changes: object) -> Manifest:
    base = Manifest(
        name="wine",
        version=2,
        model=ModelSpec(flavor="sklearn", entry="m.pkl", files=[FileEntry("m.pkl", "ab" * 32, 9)]),
        schema=Schema(fields=[Field(name="x", type="float")]),
        features=FeatureSpec(),
        config=ReleaseConfig(),
        metrics={"auc": 0.9},
        created_by="a",
        created_at="t0",
    )
    return msgspec.structs.replace(base, **changes)


_TEXT = st.text(max_size=20)


@_SETTINGS
@given(
    version=st.integers(min_value=1, max_value=10**6),
    name=st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
    who=_TEXT,
    when=_TEXT,
    parent=st.none() | _TEXT,
    code=st.none() | _TEXT,
    auc=st.floats(allow_nan=False, allow_infinity=False),
)
def test_content_digest_is_content_only(
    version: int,
    name: str,
    who: str,
    when: str,
    parent: str | None,
    code: str | None,
    auc: float,
) -> None:
    base = _manifest()
    registered = _manifest(
        version=version,
        name=name,
        created_by=who,
        created_at=when,
        parent=parent,
        parent_digest=parent,
        code_version=code,
    )
    assert content_digest(registered) == content_digest(base)
    changed = _manifest(metrics={"auc": auc})
    assert (content_digest(changed) == content_digest(base)) == (auc == 0.9)
