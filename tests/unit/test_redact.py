"""Secrets never reach a message: URLs, free text and log records are redacted."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace._redact import install_log_redaction, note_secret, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:hunter2@db:5432/reg", "postgresql://app:***@db:5432/reg"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("nats://token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("kafka://127.0.0.1:9092", "kafka://127.0.0.1:9092"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("http://u:p@host:notaport/", "http://u:***@host:notaport/"),  # unparsable port
        # a password holding "/", "?", "#" or "@" split urllib's parse and came out whole
        ("postgresql://u:S3cr3t/Pw@db:5432/test", "postgresql://u:***@db:5432/test"),
        ("redis://:a?b#c@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:p@ss@db/x", "postgresql://u:***@db/x"),
        ("unix:///run/redis.sock?db=0&password=S3cr3t", "unix:///run/redis.sock?db=0&password=***"),
        ("file:///tmp/a@b.jsonl", "file:///tmp/a@b.jsonl"),
        ("kafka:/u:S3cr3t@host:9092", "kafka:/u:***@host:9092"),  # no "//": still masked
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_urls_bare_userinfo_and_remembered_secrets() -> None:
    text = (
        "Cannot reach 'redis://:Zq9-pass/x@10.0.0.1:6379/0': refused; "
        "bucket 'AKIA:Wx7secret@bucket' invalid; hint postgresql://user@host:port/db"
    )
    shown = redact_text(text)
    assert "Zq9-pass" not in shown
    assert "Wx7secret" not in shown
    assert "postgresql://user@host:port/db" in shown  # a placeholder in a hint is kept
    # a password a library later quotes without its URL is masked too
    assert redact_text('role "x" rejected password Zq9-pass/x') == 'role "x" rejected password ***'


def test_noted_secret_is_masked_anywhere() -> None:
    note_secret("tok-8f1c2d")
    assert redact_text("header Bearer tok-8f1c2d refused") == "header Bearer *** refused"


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.WARNING):
        logging.getLogger("headrace.test").warning(
            "dedupe store %s unreachable", "redis://:Lg7secret@127.0.0.1:1/0"
        )
    assert "Lg7secret" not in caplog.text
    assert "redis://:***@127.0.0.1:1/0" in caplog.text


@settings(max_examples=200, deadline=None)
@given(
    user=st.text(st.characters(exclude_characters="@:"), max_size=8),
    password=st.text(st.characters(exclude_characters="\n"), min_size=1, max_size=20).filter(
        lambda p: p.strip("*") != "" and not p.endswith(":")
    ),
    scheme=st.sampled_from(["postgresql", "redis", "nats", "kafka", "s3", "rediss"]),
)
def test_no_password_survives_redact_url(user: str, password: str, scheme: str) -> None:
    url = f"{scheme}://{user}:{password}@db.example:5432/x"
    shown = redact_url(url)
    assert f":{password}@" not in shown
    assert shown.endswith("@db.example:5432/x")


def test_a_remembered_secret_holding_an_at_sign_is_masked_whole() -> None:
    redact_url("kafka://u:Ab3secret@pw@broker:9092")
    shown = redact_text("Kafka at u:Ab3secret@pw@127.0.0.1:9092 is not reachable")
    assert "Ab3secret" not in shown and "@pw@" not in shown


def test_a_logged_traceback_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    with caplog.at_level(logging.ERROR):
        try:
            raise ConnectionError("cannot reach redis://:Tb6secret@10.1.1.1:6379/0")
        except ConnectionError:
            logging.getLogger("headrace.test").exception("dedupe store failed")
    assert "Tb6secret" not in caplog.text
    assert "ConnectionError: cannot reach redis://:***@10.1.1.1:6379/0" in caplog.text


def test_library_errors_show_urls_redacted() -> None:
    from headrace.errors import ConfigError
    from headrace.registry.artifacts import open_artifact_store
    from headrace.streams.urls import open_sink

    for call in (
        lambda: open_sink("ftp://u:Lb5secret@host/x", topic="t"),
        lambda: open_artifact_store("ftp://u:Lb5secret@host/x"),
    ):
        with pytest.raises(ConfigError) as caught:
            call()
        assert "Lb5secret" not in str(caught.value) and "***" in str(caught.value)


def test_a_user_name_is_hidden_in_its_url_but_not_masked_everywhere() -> None:
    assert redact_url("postgresql://headrace@db/registry") == "postgresql://***@db/registry"
    assert redact_text("run `headrace doctor`") == "run `headrace doctor`"
    redact_url("nats://Tq1x9ZpL0aa7bb8@127.0.0.1:4222")  # a token: remembered
    assert redact_text("token Tq1x9ZpL0aa7bb8 refused") == "token *** refused"
