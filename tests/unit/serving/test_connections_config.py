"""The ``connections`` and ``limits.max_elements`` settings: sensible defaults, ranges
that refuse nonsense in one line, and what uvicorn is given from them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from headrace.errors import ConfigError
from headrace.serving.config import serve_spec_from_dict
from headrace.serving.server import grpc_grace_s


def test_defaults_bound_every_connection_and_the_stop() -> None:
    config = serve_spec_from_dict({})
    connections = config.connections
    assert connections.header_timeout_s == 10
    assert connections.body_timeout_s == 30
    assert connections.keepalive_timeout_s == 5
    assert connections.max_header_bytes == 65536
    assert connections.max_connections == 1024
    assert connections.shutdown_timeout_s < 30  # Kubernetes' default grace period
    assert config.limits.max_elements == 1 << 24
    assert config.access_log is False


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("connections", "header_timeout_s", 0),
        ("connections", "header_timeout_s", math.nan),
        ("connections", "body_timeout_s", math.inf),
        ("connections", "keepalive_timeout_s", -1),
        ("connections", "shutdown_timeout_s", 0),
        ("connections", "shutdown_timeout_s", 10_000),
        ("connections", "max_header_bytes", 10),
        ("connections", "max_connections", 0),
        ("limits", "max_elements", 0),
        ("limits", "timeout_s", math.inf),
    ],
)
def test_out_of_range_values_are_one_line_errors(section: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        serve_spec_from_dict({section: {key: value}}, where="serve.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("serve.yaml: ") and f"$.{section}.{key}" in message


def test_unknown_connection_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"header_timeout"):
        serve_spec_from_dict({"connections": {"header_timeout": 3}})


def test_the_grpc_share_of_the_stop_leaves_http_the_rest() -> None:
    for bound in (0.3, 3.0, 15.0, 600.0):
        config = serve_spec_from_dict({"connections": {"shutdown_timeout_s": bound}})
        share = grpc_grace_s(config)
        assert 0 < share <= 5.0 and share < bound


def test_uvicorn_gets_the_limits() -> None:
    pytest.importorskip("uvicorn")
    from headrace.serving.server import uvicorn_server

    config = serve_spec_from_dict(
        {
            "connections": {
                "keepalive_timeout_s": 2,
                "max_connections": 77,
                "shutdown_timeout_s": 9,
                "header_timeout_s": 3,
            }
        }
    )

    class App:  # the server only keeps a reference until it runs
        def drain(self, *, within_s: float) -> None: ...

    server = uvicorn_server(App(), config)  # type: ignore[arg-type]
    settings = server.config
    assert settings.timeout_keep_alive == 2
    assert settings.limit_concurrency == 77
    assert settings.timeout_graceful_shutdown == 9 - grpc_grace_s(config)
    assert settings.http.__name__ == "GuardedHttpToolsProtocol"


def test_the_documented_examples_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    import headrace.serving.config as module

    monkeypatch.setenv("HEADRACE_INFERENCE_TOKEN", "i" * 20)
    monkeypatch.setenv("HEADRACE_MANAGEMENT_TOKEN", "m" * 20)
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    examples = {
        "module docstring": (module.__doc__ or "").split("```yaml\n", 1)[1].split("```", 1)[0],
        "README": readme.split("# serve.yaml: every key optional\n", 1)[1].split("```", 1)[0],
    }
    for where, text in examples.items():
        document = yaml.safe_load(text)
        document.pop("tls")  # names files that do not exist here
        config = serve_spec_from_dict(document, where=where)
        assert config.connections == module.ConnectionsSpec(), where
        assert config.limits.max_elements == 1 << 24, where
