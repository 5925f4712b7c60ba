"""Property tests at the integrity inputs an attacker controls: a checkout's .git files and
a checkpoint file. Whatever the bytes, the answer is a value or a one-line `AuditError`,
never another exception. Examples are bounded so CI spends seconds here.
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
