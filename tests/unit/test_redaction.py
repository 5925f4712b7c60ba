"""Secrets never reach a message: URLs are redacted."""

from __future__ import annotations

import pytest

from headrace.redaction import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:hunter2@db:5432/reg", "postgresql://app:***@db:5432/reg"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("nats://token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("kafka://127.0.0.1:9092", "kafka://127.0.0.1:9092"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("http://u:p@host:notaport/", "http://***@host:notaport/"),  # unparsable port
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
