"""Pipeline spec: parsing, environment expansion and errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.errors import PipelineSpecError
from headrace.pipeline.spec import load_pipeline_spec

GOOD = """\
name: fraud-scoring
model: fraud@champion
source: {url: "kafka://${KAFKA:-127.0.0.1:9092}", topic: transactions, group: scorers}
outputs: [{url: "kafka://127.0.0.1:9092", topic: fraud-scores, options: {linger.ms: 2}}]
dead_letter: {url: "kafka://127.0.0.1:9092", topic: transactions.dlq}
id_field: event_id
batch: {max_size: 256, max_wait_ms: 2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_good_spec_with_defaults_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_pipeline_spec(write(tmp_path, GOOD))
    assert spec.source.url == "kafka://127.0.0.1:9092"
    assert spec.group == "scorers" and spec.batch.max_size == 256
    assert spec.outputs[0].options == {"linger.ms": 2}
    assert spec.dedupe.url == "memory://" and spec.limits.max_event_bytes == 1 << 20
    monkeypatch.setenv("KAFKA", "broker:1234")
    assert load_pipeline_spec(write(tmp_path, GOOD)).source.url == "kafka://broker:1234"


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (GOOD.replace("max_size: 256", "max_size: lots"), ["Expected `int`", "$.batch.max_size"]),
        (
            GOOD.replace("max_size: 256", "max_size: 0"),
            ["not within 1..100000", "$.batch.max_size"],
        ),
        (GOOD.replace("id_field", "idfield"), ["unknown field `idfield`"]),
        (GOOD.replace("model: fraud@champion\n", ""), ["missing required field `model`"]),
        (GOOD.replace("outputs: [", "outputs: [] #"), ["at least one output", "$.outputs"]),
        (
            GOOD.replace('"kafka://${KAFKA:-127.0.0.1:9092}"', "transactions"),
            ["is not a URL", "$.source.url"],
        ),
        (GOOD.replace("${KAFKA:-127.0.0.1:9092}", "${NOPE_NOT_SET}"), ["NOPE_NOT_SET"]),
        ("name: [unclosed", ["invalid YAML at line 1"]),
        ("- just\n- a list\n", ["expected a mapping"]),
    ],
)
def test_malformed_specs_name_file_and_key(tmp_path: Path, text: str, parts: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PipelineSpecError) as caught:
        load_pipeline_spec(path)
    message = str(caught.value)
    assert str(path) in message
    for part in parts:
        assert part in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineSpecError, match="Cannot read pipeline spec"):
        load_pipeline_spec(tmp_path / "nope.yaml")


# -- numbers: every one has a range; NaN, infinity and negatives are refused by name -------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("shutdown_timeout_s: -1", "$.shutdown_timeout_s"),
        ("shutdown_timeout_s: .inf", "$.shutdown_timeout_s"),
        ("stats_interval_s: .nan", "$.stats_interval_s"),
        ("stats_interval_s: -0.1", "$.stats_interval_s"),
        ("batch: {max_wait_ms: .nan}", "$.batch.max_wait_ms"),
        ("batch: {settle_ms: -0.5}", "$.batch.settle_ms"),
        ("batch: {max_in_flight: 100000000}", "$.batch.max_in_flight"),
        ("dedupe: {ttl_s: .inf}", "$.dedupe.ttl_s"),
        ("dedupe: {ttl_s: -5}", "$.dedupe.ttl_s"),
        ("dedupe: {max_keys: 0}", "$.dedupe.max_keys"),
        ("limits: {max_event_bytes: 99999999999}", "$.limits.max_event_bytes"),
        ("samples: {roll_s: .inf}", "$.samples.roll_s"),
        ("samples: {roll_mb: .nan}", "$.samples.roll_mb"),
        ("feedback: {url: 'memory://b/l', ttl_s: .nan}", "$.feedback.ttl_s"),
        ("feedback: {url: 'memory://b/l', window: 0}", "$.feedback.window"),
        ("drift: {seed: -1}", "$.drift.seed"),
        ("drift: {calibration_checks: 99999999999}", "$.drift.calibration_checks"),
    ],
)
def test_numbers_out_of_range_name_the_field(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(PipelineSpecError) as caught:
        load_pipeline_spec(write(tmp_path, GOOD + extra + "\n"))
    message = str(caught.value)
    assert message.endswith(f"- at `{key}`"), message
    assert "\n" not in message


def test_a_spec_error_never_shows_a_secret(tmp_path: Path) -> None:
    # A URL missing its scheme, a multi-line value and a secret in a wrong-typed field.
    for extra in (
        "dead_letter: {url: 'u:Hx9pass@broker:9092'}",
        'dead_letter: {url: "a\\nb:Hx9pass@c"}',
        "dead_letter: {url: 'kafka://u:Hx9pass@b:1', group: [Hx9pass]}",
    ):
        with pytest.raises(PipelineSpecError) as caught:
            load_pipeline_spec(write(tmp_path, GOOD + extra + "\n"))
        assert "Hx9pass" not in str(caught.value) and "\n" not in str(caught.value)


def test_alias_bomb_in_a_spec_is_refused_before_expansion(tmp_path: Path) -> None:
    bomb = "x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 9)
    )
    with pytest.raises(PipelineSpecError, match="once its aliases are expanded"):
        load_pipeline_spec(write(tmp_path, GOOD + bomb))


def test_kafka_urls_carry_no_credentials(tmp_path: Path) -> None:
    # The client would take "u:pw@host" for a broker name and log it past any redaction.
    text = GOOD.replace(
        'kafka://127.0.0.1:9092", topic: fraud-scores',
        'kafka://u:Kq7pass@b:9092", topic: fraud-scores',
    )
    with pytest.raises(PipelineSpecError) as caught:
        load_pipeline_spec(write(tmp_path, text))
    message = str(caught.value)
    assert "carries credentials" in message and message.endswith("- at `$.outputs[0].url`")
    assert "Kq7pass" not in message
