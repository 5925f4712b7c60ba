"""``${VAR}`` expansion shared by pipeline specs and server configs."""

from __future__ import annotations

import pytest

from headrace._env import MAX_YAML_BYTES, MAX_YAML_DEPTH, expand_env, load_yaml
from headrace._redact import redact_text
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


# -- load_yaml: hostile files cost one line, never a hang or a traceback ----------------


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("a: &a [*a]\n", "recursive alias"),
        ("a: &a {b: *a}\n", "recursive alias"),
        (BILLION_LAUGHS, "once its aliases are expanded"),
        ("[" * (MAX_YAML_DEPTH + 5) + "]" * (MAX_YAML_DEPTH + 5), "nesting deeper"),
        ("[" * 5000 + "]" * 5000, "nest"),
        ("a: 2026-02-30\n", "cannot be read"),
        ("a: *nope\n", "invalid YAML at line 1"),
        ("a: [1, 2\n", "invalid YAML"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
        ("a: !!python/object:os.system {}\n", "invalid YAML"),
        (b"a: \xff\xfe\x00", "invalid YAML"),
    ],
)
def test_hostile_yaml_is_one_line_error(text: str | bytes, part: str) -> None:
    with pytest.raises(PipelineSpecError) as caught:
        load_yaml(text, where="p.yaml", error=PipelineSpecError)
    message = str(caught.value)
    assert message.startswith("p.yaml: ") and part in message, message
    assert "\n" not in message


def test_yaml_larger_than_the_limit_is_refused() -> None:
    with pytest.raises(PipelineSpecError, match="larger than a config file"):
        load_yaml("a: " + "x" * MAX_YAML_BYTES, where="p.yaml", error=PipelineSpecError)


def test_shared_aliases_within_the_limit_still_load() -> None:
    doc = load_yaml("base: &b {x: 1}\none: *b\ntwo: *b\n", where="p", error=PipelineSpecError)
    assert doc == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}
    assert load_yaml("", where="p", error=PipelineSpecError) is None


def test_a_value_containing_itself_is_an_error_not_recursion() -> None:
    doc: dict[str, object] = {}
    doc["a"] = [doc]
    with pytest.raises(PipelineSpecError, match="contains itself - at `\\$.a\\[0\\]`"):
        expand_env(doc, where="p", error=PipelineSpecError)


def test_secret_variables_are_remembered_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_TEST_TOKEN", "tk-0d5e9a77")
    monkeypatch.setenv("HEADRACE_TEST_HOST", "broker-7")
    expand_env(
        ["${HEADRACE_TEST_TOKEN}", "${HEADRACE_TEST_HOST}"], where="p", error=PipelineSpecError
    )
    assert redact_text("sent tk-0d5e9a77 to broker-7") == "sent *** to broker-7"
