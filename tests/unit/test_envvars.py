"""``${VAR}`` expansion shared by pipeline specs and server configs."""

from __future__ import annotations

import pytest

from headrace.envvars import expand_env
from headrace.errors import PipelineSpecError
from headrace.pipeline.spec import pipeline_spec_from_dict


def test_variables_defaults_and_nesting_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_TEST_HOST", "broker:9092")
    monkeypatch.delenv("HEADRACE_TEST_UNSET", raising=False)
    doc = {"a": "kafka://${HEADRACE_TEST_HOST}", "b": ["${HEADRACE_TEST_UNSET:-x}", 3]}
    assert expand_env(doc, where="f.yaml", error=PipelineSpecError) == {
        "a": "kafka://broker:9092",
        "b": ["x", 3],
    }


def test_an_unset_variable_names_the_file_the_key_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HEADRACE_TEST_UNSET", raising=False)
    spec = {
        "name": "p",
        "model": "m:1",
        "source": {"url": "memory://x", "topic": "in"},
        "outputs": [{"url": "kafka://${HEADRACE_TEST_UNSET}", "topic": "out"}],
    }
    with pytest.raises(PipelineSpecError) as caught:
        pipeline_spec_from_dict(spec, where="scoring.yaml")
    assert str(caught.value) == (
        "scoring.yaml: environment variable 'HEADRACE_TEST_UNSET' is not set - at "
        "`$.outputs[0].url`; set it or write ${HEADRACE_TEST_UNSET:-default}"
    )
