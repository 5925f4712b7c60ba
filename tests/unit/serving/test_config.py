"""The server config: defaults, overrides, ${VAR}, and errors naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.errors import ConfigError
from headrace.serving.config import load_serve_spec, serve_spec_from_dict

TOKEN = "t" * 32


def test_defaults_and_a_full_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = serve_spec_from_dict(None)
    assert (defaults.host, defaults.port, defaults.grpc_port) == ("127.0.0.1", 8080, None)
    assert defaults.memory_budget_bytes is None and defaults.models is None
    monkeypatch.setenv("HEADRACE_TEST_TOKEN", TOKEN)
    path = tmp_path / "serve.yaml"
    path.write_text(
        "port: 9000\nmodels: [fraud]\nmemory_budget_mb: 1.5\n"
        "batching: {max_batch_size: 8, max_batch_time_ms: 0, mode: inline}\n"
        "limits: {max_body_bytes: 2048, timeout_s: 2}\n"
        "auth: {inference_token: '${HEADRACE_TEST_TOKEN}', "
        "management_token: '${HEADRACE_TEST_ADMIN:-" + "a" * 20 + "}'}\n"
    )
    config = load_serve_spec(path, overrides={"port": 9100, "host": "0.0.0.0"})  # noqa: S104
    assert config.port == 9100 and config.host == "0.0.0.0"  # noqa: S104
    assert config.models == ["fraud"]
    assert config.memory_budget_bytes == int(1.5 * 1024 * 1024)
    assert config.batching.max_batch_size == 8 and config.batching.mode == "inline"
    assert config.auth.inference_token == TOKEN
    assert config.auth.management_token == "a" * 20
    assert TOKEN not in repr(config) and "a" * 20 not in repr(config)
    assert "<redacted>" in repr(config.auth)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "port: 70000\n",
            "port 70000 is not a TCP port (0..65535; 0 picks a free one) - at `$.port`",
        ),
        ("port: 1\ngrpc_port: 1\n", "grpc_port must differ from port - at `$.grpc_port`"),
        (
            "models: []\n",
            "models is empty: list model names, or omit it to serve all - at `$.models`",
        ),
        ("batching: {max_batch_size: 0}\n", "- at `$.batching.max_batch_size`"),
        ("batching: {max_batch_time_ms: -1}\n", "- at `$.batching.max_batch_time_ms`"),
        ("batching: {max_queue_rows: 0}\n", "- at `$.batching.max_queue_rows`"),
        (
            "limits: {max_body_bytes: 10}\n",
            "max_body_bytes must be at least 1024 - at `$.limits.max_body_bytes`",
        ),
        ("limits: {timeout_s: 0}\n", "- at `$.limits.timeout_s`"),
        ("memory_budget_mb: 0\n", "- at `$.memory_budget_mb`"),
        ("overcommit: 0.5\n", "overcommit 0.5 is below 1.0 - at `$.overcommit`"),
        ("poll_interval_s: 0\n", "- at `$.poll_interval_s`"),
        (
            "auth: {inference_token: short}\n",
            "inference_token is shorter than 16 characters: use a random one - at "
            "`$.auth.inference_token`",
        ),
        (
            "tls: {certfile: /nope.pem, keyfile: /nope.key}\n",
            "certfile '/nope.pem' is not a readable file",
        ),
        ("bogus: 1\n", "Object contains unknown field `bogus`"),
        (
            "batching: {max_batch_size: many}\n",
            "Expected `int`, got `str` - at `$.batching.max_batch_size`",
        ),
        (
            "auth: {inference_token: '${HEADRACE_TEST_UNSET}'}\n",
            "'HEADRACE_TEST_UNSET' is not set - at `$.auth.inference_token`",
        ),
        ("- a list\n", "expected a mapping of settings"),
        ("port: [\n", "invalid YAML at line"),
        ("batching: {mode: fast}\n", "Invalid enum value 'fast' - at `$.batching.mode`"),
        ("batching: {inline_budget_ms: -1}\n", "- at `$.batching.inline_budget_ms`"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_serve_spec(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read serve config .*missing.yaml"):
        load_serve_spec(tmp_path / "missing.yaml")


def test_a_secret_never_appears_in_an_error(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(f"auth: {{inference_token: {TOKEN}, management_token: 7}}\n")
    with pytest.raises(ConfigError) as info:
        load_serve_spec(path)
    assert TOKEN not in str(info.value)
