"""The pipeline spec: one YAML file (or Python object) describing a stream worker.

```yaml
name: fraud-scoring
model: fraud@champion
source: {url: "kafka://127.0.0.1:9092", topic: transactions, group: fraud-scoring}
outputs: [{url: "kafka://127.0.0.1:9092", topic: fraud-scores}]
dead_letter: {url: "kafka://127.0.0.1:9092", topic: transactions.dlq}
id_field: event_id
batch: {max_size: 512, max_wait_ms: 5}
```

``${VAR}`` and ``${VAR:-default}`` in values are replaced from the environment, so one
file serves every environment. Errors name the file, the key and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from headrace._env import expand_env, load_yaml
from headrace._redact import note_secret, redact_url, show_value
from headrace.errors import PipelineSpecError

__all__ = [
    "BatchSpec",
    "DedupeSpec",
    "DriftSpec",
    "EndpointSpec",
    "FeedbackSpec",
    "LimitsSpec",
    "PipelineSpec",
    "RolloutSpec",
    "SamplesSpec",
    "TracingSpec",
    "load_pipeline_spec",
    "pipeline_spec_from_dict",
]


class EndpointSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A source or sink: its URL, topic (stream, subject, file), group and client options."""

    url: str
    topic: str = ""
    group: str | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class BatchSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Micro-batching: as large as the backlog allows, bounded in size and in waiting.

    Outputs are sent as each batch is scored, and awaited together: every `settle_ms`
    (and whenever the source runs dry, gives up partitions or stops) the worker waits for
    every sink's acknowledgement, then records the ids and commits the offsets. At most
    `max_in_flight` events are sent but not yet settled; at the bound the worker pauses
    the source and settles before it reads more, so memory stays bounded whatever the
    backlog.
    """

    max_size: int = 512
    max_wait_ms: float = 5.0
    settle_ms: float = 100.0
    max_in_flight: int = 20_000


class DedupeSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Where emitted event ids are remembered: ``memory://`` (default) or ``redis://…``."""

    url: str = "memory://"
    ttl_s: float = 24 * 3600.0
    max_keys: int = 1_000_000
    enabled: bool = True


class LimitsSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Per-event limits; an event past them is dead-lettered, never processed."""

    max_event_bytes: int = 1 << 20


class TracingSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """OpenTelemetry spans per stage for a share of the events (and every dead letter).

    Events whose producer sent a ``traceparent`` follow its sampled flag; `sample_ratio`
    is the share of the others that is traced. A span costs tens of microseconds, an
    event about five, hence the small default.
    """

    sample_ratio: float = 0.001


class RolloutSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How the worker follows the registry: alias moves and rollouts.

    A worker whose ``model`` is an alias polls the registry every `poll_s` seconds (two
    indexed reads) and switches to what it names between batches; during a rollout it
    writes its per-arm evidence every `poll_s` and judges while it holds the rollout's
    lease, which lapses `lease_ttl_s` after its holder stops renewing it.

    Model latency is compared between calls of equal size, which costs a canary an extra
    model call in the batches it is measured in: one batch in `time_every` is (1: all).
    Measuring every batch cost a 50% canary a tenth of the worker's throughput (63% of no
    rollout against 72% at 4, ``benchmarks/rollout_overhead.py``); the price is latency
    evidence at a quarter of the rate.
    """

    follow: bool = True
    poll_s: float = 1.0
    lease_ttl_s: float = 10.0
    decide: bool = True
    time_every: int = 4


class SamplesSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Payload samples: a share of scored events and every errored one, PII masked.

    The default share keeps ~100 rows a second from a worker scoring 100k events a
    second (8.6 million a day): plenty to look at, cheap to keep.

    `url` is a ``file://`` directory of Parquet files (default
    ``<home>/samples/<pipeline>``); `pii` masks ``pii`` fields by keyed hash (the key
    from the environment variable `key_env`) or redaction. Files roll at `roll_mb` or
    `roll_s`; at most `max_buffer` rows wait for the writer (more are dropped, counted).
    """

    url: str = ""
    ratio: float = 0.001
    pii: str = "redact"
    key_env: str = "HEADRACE_PII_KEY"
    roll_mb: float = 64.0
    roll_s: float = 300.0
    max_buffer: int = 10_000


class FeedbackSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Ground-truth labels, arriving later on their own stream, joined by event id.

    Each feedback event is a JSON object with `id_field` and `label_field`. At most
    `max_pending` predictions wait for their label, none longer than `ttl_s`; metrics
    cover the last `window` joined events per release.
    """

    url: str
    topic: str = ""
    group: str | None = None
    id_field: str = "event_id"
    label_field: str = "label"
    max_pending: int = 500_000
    ttl_s: float = 7 * 24 * 3600.0
    window: int = 10_000
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class DriftSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Online drift of the release's inputs against its reference sample.

    Every `stride` scored rows the last `window` are tested (KS, all columns at once);
    the alarm threshold is calibrated so that, with nothing drifting, false alarms come
    about every `target_run_length` rows. Calibrating simulates up to
    `calibration_checks` windows (seconds), once per release and settings: the result is
    cached under ``<home>/drift-calibration``. `columns` defaults to the release's
    numeric inputs. An alarm goes to the audit log, the metrics, a WARNING log line, a
    ``drift`` tag on the release and, when given, the `sink` (a JSON record). It opens a
    drift episode: while the drift lasts, later detections only count in the metrics; the
    episode closes after `clear_after_checks` clean checks in a row.
    """

    enabled: bool = True
    window: int = 1000
    stride: int = 500
    target_run_length: int = 100_000
    columns: list[str] | None = None
    calibration_checks: int = 20_000
    seed: int = 0
    clear_after_checks: int = 3
    sink: EndpointSpec | None = None


class PipelineSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A stream worker: where events come from, which release scores them, where to.

    Parameters
    ----------
    name
        The pipeline's name (metrics label, dedupe namespace, default consumer group).
    model
        The release: ``name@alias`` or ``name:version``.
    id_field
        The event field holding its idempotency key; without it, the source position.
    event_time_field
        An event field with the event time (epoch seconds or ISO-8601); without it the
        broker timestamp is the event time.
    shutdown_timeout_s
        How long a stop may take to drain and commit before the worker gives up.
    tracing, samples, feedback, drift
        Monitoring, each off unless given: traces, payload samples, live accuracy,
        online drift.
    probabilities
        Also write every class's probability into each output, as ``probabilities:
        {class: p}`` (for a classifier that gives them; off by default: it makes every
        output longer, and ``score`` is enough for a binary model).
    shadow
        Where a shadowing candidate's outputs go (default: a JSONL file under
        ``HEADRACE_HOME/shadow``); they never reach `outputs`.
    rollout
        Following alias moves and taking part in rollouts.
    """

    name: str
    model: str
    source: EndpointSpec
    outputs: list[EndpointSpec]
    dead_letter: EndpointSpec | None = None
    id_field: str | None = None
    event_time_field: str | None = None
    batch: BatchSpec = msgspec.field(default_factory=BatchSpec)
    dedupe: DedupeSpec = msgspec.field(default_factory=DedupeSpec)
    limits: LimitsSpec = msgspec.field(default_factory=LimitsSpec)
    shutdown_timeout_s: float = 30.0
    stats_interval_s: float = 10.0
    tracing: TracingSpec | None = None
    samples: SamplesSpec | None = None
    feedback: FeedbackSpec | None = None
    drift: DriftSpec | None = None
    probabilities: bool = False
    shadow: EndpointSpec | None = None
    rollout: RolloutSpec = msgspec.field(default_factory=RolloutSpec)

    @property
    def group(self) -> str:
        """The consumer group: the source's, or the pipeline name."""
        return self.source.group or self.name


_DAY_S = 24 * 3600.0
_SECRET_OPTION = re.compile(r"(?i)pass|secret|token|credential|key")


def _ranges(spec: PipelineSpec) -> list[tuple[str, float, float, float, bool]]:
    """(key, value, low, high, low included) for every number outside the monitors.

    Every number has a range: NaN and infinity fall outside all of them, and a value
    past a maximum is a typo (``poll: 1e9``) or a hostile file, never a setting.
    """
    batch, dedupe = spec.batch, spec.dedupe
    return [
        ("$.batch.max_size", batch.max_size, 1, 100_000, True),
        ("$.batch.max_wait_ms", batch.max_wait_ms, 0, 60_000, True),
        ("$.batch.settle_ms", batch.settle_ms, 0, 60_000, True),
        ("$.batch.max_in_flight", batch.max_in_flight, batch.max_size, 10_000_000, True),
        ("$.dedupe.ttl_s", dedupe.ttl_s, 0, 366 * _DAY_S, False),
        ("$.dedupe.max_keys", dedupe.max_keys, 1, 1_000_000_000, True),
        ("$.limits.max_event_bytes", spec.limits.max_event_bytes, 1, 1 << 30, True),
        ("$.shutdown_timeout_s", spec.shutdown_timeout_s, 0, 3600, False),
        ("$.stats_interval_s", spec.stats_interval_s, 0, _DAY_S, True),  # 0: every batch
        ("$.rollout.poll_s", spec.rollout.poll_s, 0.05, 3600, True),
        ("$.rollout.lease_ttl_s", spec.rollout.lease_ttl_s, spec.rollout.poll_s, 3600, False),
        ("$.rollout.time_every", spec.rollout.time_every, 1, 1_000_000, True),
    ]


def _range_problems(ranges: list[tuple[str, float, float, float, bool]]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for key, value, low, high, low_included in ranges:
        above = low <= value if low_included else low < value
        if above and value <= high:  # NaN fails both comparisons
            continue
        if value > high:
            problems.append((key, f"{value} is above the maximum {_number(high)}"))
        elif not low_included:
            kind = "must be positive" if low == 0 else f"must be above {_number(low)}"
            problems.append((key, f"{value} {kind} (at most {_number(high)})"))
        else:
            positive = " (must be positive)" if low == 1 and value < 1 else ""
            problems.append(
                (key, f"{value} is not within {_number(low)}..{_number(high)}{positive}")
            )
    return problems


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check(spec: PipelineSpec, *, where: str) -> PipelineSpec:
    problems: list[tuple[str, str]] = []
    if not spec.outputs:
        problems.append(("$.outputs", "at least one output is required"))
    problems.extend(_range_problems(_ranges(spec)))
    problems.extend(_monitoring_problems(spec))
    for key, endpoint in (
        [("$.source", spec.source)]
        + [(f"$.outputs[{i}]", o) for i, o in enumerate(spec.outputs)]
        + ([("$.dead_letter", spec.dead_letter)] if spec.dead_letter else [])
        + ([("$.shadow", spec.shadow)] if spec.shadow else [])
    ):
        problems.extend(_url_problems(f"{key}.url", endpoint.url))
    if problems:
        key, problem = problems[0]
        raise PipelineSpecError(f"{where}: {problem} - at `{key}`")
    return spec


def _monitoring_problems(spec: PipelineSpec) -> list[tuple[str, str]]:
    """What is wrong in the ``tracing``, ``samples`` and ``feedback`` sections."""
    problems: list[tuple[str, str]] = []

    def share(key: str, value: float) -> None:
        if not 0.0 <= value <= 1.0:  # NaN fails this too
            problems.append((key, f"{value} is not a share within [0, 1] (e.g. 0.01)"))

    if spec.tracing is not None:
        share("$.tracing.sample_ratio", spec.tracing.sample_ratio)
    samples = spec.samples
    if samples is not None:
        share("$.samples.ratio", samples.ratio)
        if samples.url and not samples.url.startswith("file://"):
            problems.append(
                (
                    "$.samples.url",
                    f"'{show_value(samples.url)}' is not a file:// directory (samples are "
                    "Parquet files)",
                )
            )
        problems.extend(
            _range_problems(
                [
                    ("$.samples.roll_mb", samples.roll_mb, 0, 100_000, False),
                    ("$.samples.roll_s", samples.roll_s, 0, 7 * _DAY_S, False),
                    ("$.samples.max_buffer", samples.max_buffer, 1, 10_000_000, True),
                ]
            )
        )
        if samples.pii not in ("hash", "redact"):
            problems.append(("$.samples.pii", f"'{show_value(samples.pii)}' is not hash or redact"))
        elif samples.pii == "hash" and not samples.key_env:
            problems.append(("$.samples.key_env", "name the variable holding the hash key"))
    feedback = spec.feedback
    if feedback is not None:
        problems.extend(_url_problems("$.feedback.url", feedback.url))
        if not feedback.id_field or not feedback.label_field:
            problems.append(("$.feedback", "id_field and label_field must not be empty"))
        problems.extend(
            _range_problems(
                [
                    ("$.feedback.max_pending", feedback.max_pending, 1, 100_000_000, True),
                    ("$.feedback.ttl_s", feedback.ttl_s, 0, 366 * _DAY_S, False),
                    ("$.feedback.window", feedback.window, 1, 10_000_000, True),
                ]
            )
        )
    problems.extend(_drift_problems(spec.drift))
    return problems


def _drift_problems(drift: DriftSpec | None) -> list[tuple[str, str]]:
    """What is wrong in the ``drift`` section."""
    if drift is None:
        return []
    problems = _range_problems(
        [
            ("$.drift.window", drift.window, 2, 10_000_000, True),
            ("$.drift.target_run_length", drift.target_run_length, 0, 10**12, False),
            ("$.drift.calibration_checks", drift.calibration_checks, 100, 10_000_000, True),
            ("$.drift.seed", drift.seed, 0, 2**32 - 1, True),
            ("$.drift.clear_after_checks", drift.clear_after_checks, 1, 1_000_000, True),
        ]
    )
    if not 1 <= drift.stride <= max(drift.window, 1):
        problems.append(
            ("$.drift.stride", f"{drift.stride} is not within 1..window ({drift.window})")
        )
    if drift.target_run_length <= drift.window:
        problems.append(
            (
                "$.drift.target_run_length",
                f"{drift.target_run_length} rows must exceed the window ({drift.window})",
            )
        )
    if drift.columns is not None and (not drift.columns or "" in drift.columns):
        problems.append(("$.drift.columns", "name at least one column (or leave it out)"))
    if drift.sink is not None:
        problems.extend(_url_problems("$.drift.sink.url", drift.sink.url))
    return problems


def _url_problems(key: str, url: str) -> list[tuple[str, str]]:
    """A source or sink URL: a scheme, and no credentials where the client ignores them."""
    if "://" not in url:
        return [
            (
                key,
                f"'{show_value(url)}' is not a URL (kafka://, redis://, nats://, file://, "
                "memory://)",
            )
        ]
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "kafka" and "@" in rest.split("/", 1)[0]:
        # The Kafka client takes host:port only: a user part would be sent as a broker
        # name (and printed by the client's own logs, past any redaction).
        return [
            (
                key,
                f"'{redact_url(url)}' carries credentials, which Kafka URLs cannot: give them "
                "as options (sasl.username, sasl.password: ${KAFKA_PASSWORD})",
            )
        ]
    return []


def pipeline_spec_from_dict(data: Any, *, where: str = "pipeline spec") -> PipelineSpec:
    """Validate a decoded spec (after ``${VAR}`` expansion)."""
    if not isinstance(data, dict):
        raise PipelineSpecError(
            f"{where}: expected a mapping with name, model, source and outputs, got "
            f"{type(data).__name__}."
        )
    expanded = expand_env(data, where=where, error=PipelineSpecError)
    try:
        spec = msgspec.convert(expanded, PipelineSpec)
    except msgspec.ValidationError as exc:
        # The message may quote a key or value of the file: one line, redacted.
        raise PipelineSpecError(
            f"{where}: {show_value(str(exc), limit=300)}. See the pipeline spec in the README."
        ) from None
    # Remember every credential (in URLs, in client options such as sasl.password), so
    # that no later message or log line shows it, whoever prints it.
    for url, options in _endpoints(spec):
        redact_url(url)
        for name, value in options.items():
            if _SECRET_OPTION.search(str(name)):
                note_secret(str(value))
    return _check(spec, where=where)


def _endpoints(spec: PipelineSpec) -> list[tuple[str, dict[str, Any]]]:
    """Every URL in the spec, with its client options."""
    ends: list[EndpointSpec | FeedbackSpec | None] = [
        spec.source,
        *spec.outputs,
        spec.dead_letter,
        spec.shadow,
        spec.feedback,
        spec.drift.sink if spec.drift is not None else None,
    ]
    found = [(end.url, end.options) for end in ends if end is not None]
    return [*found, (spec.dedupe.url, {})]


def load_pipeline_spec(path: Path) -> PipelineSpec:
    """Read and validate a pipeline YAML file (size, nesting and aliases bounded).

    Raises
    ------
    PipelineSpecError
        One line naming the file, the key and the fix.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise PipelineSpecError(f"Cannot read pipeline spec '{path}': {exc.strerror}.") from None
    data = load_yaml(text, where=str(path), error=PipelineSpecError)
    return pipeline_spec_from_dict(data, where=str(path))
