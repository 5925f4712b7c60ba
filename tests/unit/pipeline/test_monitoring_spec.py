"""The pipeline spec's monitoring sections: defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.errors import PipelineSpecError
from headrace.pipeline.spec import load_pipeline_spec

BASE = """\
name: fraud-scoring
model: fraud@champion
source: {url: "memory://b/events"}
outputs: [{url: "memory://b/scores"}]
"""


def load(tmp_path: Path, extra: str) -> object:
    path = tmp_path / "pipeline.yaml"
    path.write_text(BASE + extra)
    return load_pipeline_spec(path)


def test_sections_are_off_by_default_and_fill_their_defaults(tmp_path: Path) -> None:
    spec = load(tmp_path, "")
    assert (spec.tracing, spec.samples, spec.feedback) == (None, None, None)  # type: ignore[attr-defined]
    spec = load(
        tmp_path,
        "tracing: {}\n"
        "samples: {ratio: 0.05, pii: hash}\n"
        "feedback: {url: 'kafka://127.0.0.1:9092', topic: labels, label_field: is_fraud}\n",
    )
    assert spec.tracing.sample_ratio == 0.001  # type: ignore[attr-defined]
    samples = spec.samples  # type: ignore[attr-defined]
    assert (samples.ratio, samples.pii, samples.key_env, samples.url) == (
        0.05,
        "hash",
        "HEADRACE_PII_KEY",
        "",
    )
    feedback = spec.feedback  # type: ignore[attr-defined]
    assert (feedback.topic, feedback.id_field, feedback.label_field) == (
        "labels",
        "event_id",
        "is_fraud",
    )
    assert feedback.max_pending == 500_000 and feedback.ttl_s == 7 * 24 * 3600.0


@pytest.mark.parametrize(
    ("extra", "parts"),
    [
        (
            "tracing: {sample_ratio: 1.5}",
            ["1.5 is not a share within [0, 1]", "$.tracing.sample_ratio"],
        ),
        ("tracing: {sample_ratio: .nan}", ["nan is not a share", "$.tracing.sample_ratio"]),
        ("tracing: {ratio: 0.1}", ["unknown field `ratio`", "$.tracing"]),
        ("tracing: {sample_ratio: lots}", ["Expected `float`", "$.tracing.sample_ratio"]),
        ("samples: {ratio: -0.1}", ["-0.1 is not a share", "$.samples.ratio"]),
        ("samples: {pii: scramble}", ["'scramble' is not hash or redact", "$.samples.pii"]),
        ("samples: {url: 's3://bucket/samples'}", ["is not a file:// directory", "$.samples.url"]),
        ("samples: {roll_mb: 0}", ["must be positive", "$.samples.roll_mb"]),
        ("samples: {max_buffer: 0}", ["must be positive", "$.samples.max_buffer"]),
        ("samples: {pii: hash, key_env: ''}", ["hash key", "$.samples.key_env"]),
        ("feedback: {topic: labels}", ["missing required field `url`", "$.feedback"]),
        ("feedback: {url: labels.jsonl}", ["is not a URL", "$.feedback.url"]),
        ("feedback: {url: 'memory://b/l', max_pending: 0}", ["$.feedback.max_pending"]),
        ("feedback: {url: 'memory://b/l', ttl_s: -1}", ["$.feedback.ttl_s"]),
        ("feedback: {url: 'memory://b/l', window: 0}", ["$.feedback.window"]),
        ("feedback: {url: 'memory://b/l', label_field: ''}", ["must not be empty", "$.feedback"]),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, extra: str, parts: list[str]) -> None:
    with pytest.raises(PipelineSpecError) as caught:
        load(tmp_path, extra + "\n")
    message = str(caught.value)
    assert str(tmp_path / "pipeline.yaml") in message
    for part in parts:
        assert part in message, message
