"""The server config: one YAML file for ``headrace serve``, every key optional.

```yaml
host: 0.0.0.0
port: 8080
grpc_port: 8081                # the gRPC server (omit for HTTP only)
models: [fraud, churn]         # omit to serve every name in the registry
alias: champion                # what a bare model name serves
memory_budget_mb: 2048         # loaded models' measured memory; omit for no limit
overcommit: 1.0
poll_interval_s: 1.0           # how soon an alias move (or a rollout's change) is noticed
rollout_poll_s: 1.0            # how often rollout evidence is written (and judged)
shadow_path: shadow.jsonl      # shadow outputs; default HEADRACE_HOME/shadow/serving.jsonl
batching: {max_batch_size: 64, max_batch_time_ms: 2, max_queue_rows: 16384, mode: auto}
limits: {max_body_bytes: 16777216, timeout_s: 30, max_elements: 16777216}
connections:                   # what one client connection may hold (slow clients)
  header_timeout_s: 10         # a request's headers must arrive within this (408)
  body_timeout_s: 30           # and its whole body within this (408)
  keepalive_timeout_s: 5       # an idle connection is closed after this
  max_header_bytes: 65536      # request line and headers (431 past it)
  max_connections: 1024        # past it, requests get 503 until others finish
  shutdown_timeout_s: 15       # SIGTERM: requests in flight get this long, then exit
access_log: false              # one JSON line per request on stderr (no headers, no tokens)
auth:                          # bearer tokens; omit a token to leave its routes open
  inference_token: ${HEADRACE_INFERENCE_TOKEN}
  management_token: ${HEADRACE_MANAGEMENT_TOKEN}
tls: {certfile: server.pem, keyfile: server.key}
tracing: {sample_ratio: 0.01}  # OpenTelemetry spans per request (omit: no tracing)
```

``${VAR}`` and ``${VAR:-default}`` are replaced from the environment (tokens belong
there, not in the file). Errors name the file, the key and the fix. Tokens never appear
in a repr, a log line or an error message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from headrace._env import expand_env, load_yaml
from headrace._redact import note_secret, show_value
from headrace.errors import ConfigError

__all__ = [
    "AuthSpec",
    "BatchingSpec",
    "ConnectionsSpec",
    "LimitsSpec",
    "ServeSpec",
    "TLSSpec",
    "TracingSpec",
    "load_serve_spec",
    "serve_spec_from_dict",
]


class BatchingSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Adaptive batching per model (see `headrace.serving.AdaptiveBatcher`)."""

    max_batch_size: int = 64
    max_batch_time_ms: float = 2.0
    max_queue_rows: int = 16_384
    mode: Literal["auto", "inline", "thread"] = "auto"
    inline_budget_ms: float = 2.0


class LimitsSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Per-request limits: body size (413 past it), time (504 past it), and the values one
    tensor may declare (400 past it, checked before anything is allocated)."""

    max_body_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 30.0
    max_elements: int = 16 * 1024 * 1024


class ConnectionsSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """What one client connection may hold, so that slow or stalled clients cannot pile up.

    Attributes
    ----------
    header_timeout_s
        A request's line and headers must all arrive within this many seconds of the
        connection opening (or of the previous response); else 408 and the connection
        is closed.
    body_timeout_s
        A request's whole body must arrive within this many seconds of its headers
        (an endless chunked upload included); else 408 and the connection is closed.
    keepalive_timeout_s
        An idle connection between requests is closed after this many seconds.
    max_header_bytes
        The request line and headers may take at most this many bytes (431 past it).
    max_connections
        Past this many open connections (or requests in flight) a request is answered
        503 until others finish; sockets beyond it still cost the kernel a descriptor.
    shutdown_timeout_s
        On SIGTERM/SIGINT, requests in flight get this long in all (HTTP and gRPC), then
        the rest are cancelled and the process exits: keep it under the orchestrator's
        grace period (Kubernetes: 30 s).
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 5.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1024
    shutdown_timeout_s: float = 15.0


class AuthSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Bearer tokens: one for inference and metadata, one for the repository extension.

    A route whose token is not set is open. Health and ``/metrics`` are always open (a
    load balancer and Prometheus must reach them).
    """

    inference_token: str | None = None
    management_token: str | None = None

    def __repr__(self) -> str:
        shown = {
            key: None if getattr(self, key) is None else "<redacted>"
            for key in ("inference_token", "management_token")
        }
        return f"AuthSpec({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class TLSSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Serve HTTPS with this certificate chain and private key (PEM files)."""

    certfile: str
    keyfile: str
    keyfile_password: str | None = None

    def __repr__(self) -> str:
        password = None if self.keyfile_password is None else "<redacted>"
        return f"TLSSpec(certfile={self.certfile!r}, keyfile={self.keyfile!r}, " + (
            f"keyfile_password={password!r})"
        )


class TracingSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """OpenTelemetry spans for HTTP requests (``pip install 'headrace[otel]'``).

    A request carrying a W3C ``traceparent`` follows its caller's sampling decision; a
    `sample_ratio` share of the others starts a trace. Spans go over OTLP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Without this section nothing is traced and
    OpenTelemetry is never imported.
    """

    sample_ratio: float = 1.0


class ServeSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Everything ``headrace serve`` needs besides the registry (see the module docstring).

    Parameters
    ----------
    host, port
        Where the HTTP server listens.
    grpc_port
        Where the gRPC server listens; None for no gRPC server.
    models
        The model names to serve; None serves every name in the registry.
    alias
        The alias a bare model name serves.
    memory_budget_mb
        Memory for loaded models, measured at load; None for no limit.
    overcommit
        Multiplier on the budget.
    poll_interval_s
        How often the registry is polled for alias moves and rollout changes.
    rollout_poll_s
        How often this server writes its rollout evidence to the registry (and, holding
        the rollout's lease, judges it).
    shadow_path
        The JSONL file a shadowing candidate's outputs go to; None for
        ``HEADRACE_HOME/shadow/serving.jsonl``.
    access_log
        Log one JSON line per request (time, method, route, model, status, duration,
        bytes) on stderr; never headers, bodies or tokens.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = None
    models: list[str] | None = None
    alias: str = "champion"
    memory_budget_mb: float | None = None
    overcommit: float = 1.0
    poll_interval_s: float = 1.0
    rollout_poll_s: float = 1.0
    shadow_path: str | None = None
    batching: BatchingSpec = msgspec.field(default_factory=BatchingSpec)
    limits: LimitsSpec = msgspec.field(default_factory=LimitsSpec)
    connections: ConnectionsSpec = msgspec.field(default_factory=ConnectionsSpec)
    access_log: bool = False
    auth: AuthSpec = msgspec.field(default_factory=AuthSpec)
    tls: TLSSpec | None = None
    tracing: TracingSpec | None = None

    @property
    def memory_budget_bytes(self) -> int | None:
        """The memory budget in bytes, or None."""
        return None if self.memory_budget_mb is None else int(self.memory_budget_mb * 1024 * 1024)


def _problems(config: ServeSpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key, port in (("$.port", config.port), ("$.grpc_port", config.grpc_port)):
        if port is not None and not 0 <= port <= 65535:
            problems.append((key, f"{port} is not a TCP port (0..65535; 0 picks a free one)"))
    if config.grpc_port is not None and config.grpc_port == config.port and config.port != 0:
        problems.append(("$.grpc_port", "must differ from port"))
    if config.models is not None and not config.models:
        problems.append(("$.models", "is empty: list model names, or omit it to serve all"))
    budget = config.memory_budget_mb
    if budget is not None and not 0 < budget <= 1 << 24:  # NaN fails too
        problems.append(
            ("$.memory_budget_mb", f"{budget} must be positive, at most 16777216 (omit: no limit)")
        )
    if not config.overcommit >= 1.0:
        problems.append(("$.overcommit", f"{config.overcommit} is below 1.0"))
    elif not config.overcommit <= 100.0:
        problems.append(("$.overcommit", f"{config.overcommit} is above 100"))
    if not 0 < config.poll_interval_s <= 3600:  # .inf: alias moves would never be noticed
        problems.append(("$.poll_interval_s", f"{config.poll_interval_s} is not within (0, 3600]"))
    if not 0 < config.rollout_poll_s <= 3600:
        problems.append(("$.rollout_poll_s", f"{config.rollout_poll_s} is not within (0, 3600]"))
    if config.shadow_path is not None and not config.shadow_path.strip():
        problems.append(("$.shadow_path", "is empty: give a file path, or omit it"))
    batching = config.batching
    if not 1 <= batching.max_batch_size <= 100_000:
        problems.append(("$.batching.max_batch_size", "must be within 1..100000"))
    if not 0 <= batching.max_batch_time_ms <= 60_000:
        problems.append(("$.batching.max_batch_time_ms", "must be within 0..60000"))
    if not 0 <= batching.inline_budget_ms <= 1000:
        problems.append(("$.batching.inline_budget_ms", "must be within 0..1000"))
    if not 1 <= batching.max_queue_rows <= 100_000_000:
        problems.append(("$.batching.max_queue_rows", "must be within 1..100000000"))
    if config.limits.max_body_bytes < 1024:
        problems.append(("$.limits.max_body_bytes", "must be at least 1024"))
    elif config.limits.max_body_bytes > 1 << 31:
        problems.append(("$.limits.max_body_bytes", "must be at most 2147483648"))
    if not 0 < config.limits.timeout_s <= 3600:
        problems.append(("$.limits.timeout_s", "must be within (0, 3600]"))
    if not 1 <= config.limits.max_elements <= 1 << 31:
        problems.append(("$.limits.max_elements", "must be within 1..2147483648"))
    problems.extend(_connection_problems(config.connections))
    for key in ("inference_token", "management_token"):
        token = getattr(config.auth, key)
        if token is not None and len(token) < 16:
            problems.append((f"$.auth.{key}", "is shorter than 16 characters: use a random one"))
    if config.tracing is not None:
        ratio = config.tracing.sample_ratio
        if not 0.0 <= ratio <= 1.0:  # also refuses NaN
            problems.append(
                ("$.tracing.sample_ratio", f"{ratio} is not within [0, 1]: give a share like 0.01")
            )
    if config.tls is not None:
        problems.extend(_tls_problems(config.tls))
    return problems


def _tls_problems(tls: TLSSpec) -> list[tuple[str, str]]:
    """The certificate and key must be readable PEM files that belong together.

    Loaded here, once, so a wrong file is a config error naming the key, not an
    ``ssl.SSLError`` traceback when the server starts.
    """
    import ssl

    for key in ("certfile", "keyfile"):
        path = Path(getattr(tls, key))
        if not path.is_file():
            return [(f"$.tls.{key}", f"'{show_value(str(path))}' is not a readable file")]
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            tls.certfile, tls.keyfile, password=tls.keyfile_password
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        return [
            (
                "$.tls.certfile",
                f"'{show_value(tls.certfile)}' with keyfile '{show_value(tls.keyfile)}' is not "
                f"a PEM certificate chain and its private key ({reason}): check both files "
                "and keyfile_password",
            )
        ]
    return []


def _connection_problems(connections: ConnectionsSpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seconds = {
        "header_timeout_s": (0.1, 600.0),
        "body_timeout_s": (0.1, 3600.0),
        "keepalive_timeout_s": (0.1, 3600.0),
        "shutdown_timeout_s": (0.1, 600.0),
    }
    for key, (low, high) in seconds.items():
        value = getattr(connections, key)
        if not low <= value <= high:  # also refuses NaN
            problems.append((f"$.connections.{key}", f"{value} is not within [{low:g}, {high:g}]"))
    if not 1024 <= connections.max_header_bytes <= 16 * 1024 * 1024:
        problems.append(("$.connections.max_header_bytes", "must be within 1024..16777216"))
    if not 1 <= connections.max_connections <= 1_000_000:
        problems.append(("$.connections.max_connections", "must be within 1..1000000"))
    return problems


def serve_spec_from_dict(
    data: Any, *, where: str = "serve config", overrides: dict[str, Any] | None = None
) -> ServeSpec:
    """Validate a decoded config (``${VAR}`` are expanded first).

    `overrides` (command-line flags) replace top-level keys after the expansion.

    Raises
    ------
    ConfigError
        Naming `where`, the key (``$.batching.max_batch_size``) and the fix.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of settings (host, port, models, ...), got "
            f"{type(data).__name__}"
        )
    expanded = expand_env(data, where=where, error=ConfigError)
    if overrides:
        expanded = {**expanded, **overrides}
        where = f"{where} (with command-line options)"
    try:
        config = msgspec.convert(expanded, ServeSpec)
    except msgspec.ValidationError as exc:
        # The message may quote a key or an enum value of the file: one line, redacted.
        raise ConfigError(
            f"{where}: {show_value(str(exc), limit=300)}. See `headrace serve` in the README"
        ) from None
    # Remembered, so that no message or log line shows them (see headrace._redact).
    for secret in (config.auth.inference_token, config.auth.management_token):
        note_secret(secret)
    if config.tls is not None:
        note_secret(config.tls.keyfile_password)
    problems = _problems(config)
    if problems:
        key, problem = problems[0]
        raise ConfigError(f"{where}: {key.rpartition('.')[2]} {problem} - at `{key}`")
    return config


def load_serve_spec(path: Path, *, overrides: dict[str, Any] | None = None) -> ServeSpec:
    """Read and validate a server config YAML file (`overrides` as `serve_spec_from_dict`).

    Raises
    ------
    ConfigError
        When the file cannot be read, is not YAML, or a key is wrong (named with its path).
    """
    try:
        text = path.read_bytes()  # load_yaml decodes (a bad encoding is a ConfigError)
    except OSError as exc:
        raise ConfigError(f"Cannot read serve config '{path}': {exc.strerror}") from exc
    data = load_yaml(text, where=str(path), error=ConfigError)  # size and aliases bounded
    return serve_spec_from_dict(data, where=str(path), overrides=overrides)
