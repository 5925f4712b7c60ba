"""Serve config: every number in range, TLS files checked, hostile YAML one line.

Each case was a traceback or silently accepted before: ``memory_budget_mb: .nan``
crashed at start-up, ``poll_interval_s: .inf`` meant alias moves were never noticed, a
non-PEM certificate raised ``ssl.SSLError``, and an alias bomb hung the loader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.errors import ConfigError
from headrace.serving.config import load_serve_spec


def config_error(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "serve.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_serve_spec(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("memory_budget_mb: .nan", "$.memory_budget_mb"),
        ("memory_budget_mb: .inf", "$.memory_budget_mb"),
        ("memory_budget_mb: -1", "$.memory_budget_mb"),
        ("poll_interval_s: .inf", "$.poll_interval_s"),
        ("poll_interval_s: .nan", "$.poll_interval_s"),
        ("poll_interval_s: -1", "$.poll_interval_s"),
        ("overcommit: .nan", "$.overcommit"),
        ("overcommit: 1000.0", "$.overcommit"),
        ("batching: {max_queue_rows: 10000000000}", "$.batching.max_queue_rows"),
        ("batching: {max_batch_time_ms: .inf}", "$.batching.max_batch_time_ms"),
        ("limits: {timeout_s: -1}", "$.limits.timeout_s"),
        ("limits: {timeout_s: .nan}", "$.limits.timeout_s"),
        ("limits: {max_body_bytes: 99999999999}", "$.limits.max_body_bytes"),
    ],
)
def test_numbers_out_of_range_name_the_field(tmp_path: Path, text: str, key: str) -> None:
    assert config_error(tmp_path, text + "\n").endswith(f"- at `{key}`")


def test_a_bad_tls_certificate_is_a_config_error(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    key.write_text("not a key\n")
    message = config_error(tmp_path, f"tls: {{certfile: '{cert}', keyfile: '{key}'}}\n")
    assert "is not a PEM certificate chain and its private key" in message
    assert message.endswith("- at `$.tls.certfile`")
    missing = config_error(
        tmp_path, f"tls: {{certfile: '{tmp_path}/nope.pem', keyfile: '{key}'}}\n"
    )
    assert "is not a readable file - at `$.tls.certfile`" in missing


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("a: &a [*a]\n", "recursive alias"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"b{i}: &b{i} [{', '.join(['*a' if i == 0 else f'*b{i - 1}'] * 10)}]\n"
                for i in range(8)
            ),
            "once its aliases are expanded",
        ),
        (b"port: \xff\xfe\n", "invalid YAML"),
        ("port: [\n", "invalid YAML at line"),
    ],
)
def test_hostile_yaml_is_one_line(tmp_path: Path, text: str | bytes, part: str) -> None:
    assert part in config_error(tmp_path, text)


def test_a_wrong_value_is_not_echoed_as_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token put in the wrong (enum) field by a slip in the environment.
    monkeypatch.setenv("HEADRACE_TEST_TOKEN", "Zt8-0123456789abcdef")
    message = config_error(tmp_path, "batching: {mode: '${HEADRACE_TEST_TOKEN}'}\n")
    assert "Zt8-0123456789abcdef" not in message
    assert "$.batching.mode" in message
