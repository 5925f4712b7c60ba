from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from headrace.errors import SchemaError
from headrace.release.config import ReleaseConfig, config_from_builtins, load_config


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    with pytest.raises(SchemaError) as info:
        load_config(write(tmp_path, text, name))
    return str(info.value)


def test_load_full_config(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "task: classification\nthreshold: 0.7\nlabels: [legit, fraud]\n"
            "positive_class: fraud\nruntime: {n_jobs: 1}\nmax_event_bytes: 65536\n",
        )
    )
    assert config == ReleaseConfig(
        task="classification",
        threshold=0.7,
        labels=["legit", "fraud"],
        positive_class="fraud",
        runtime={"n_jobs": 1},
        max_event_bytes=65536,
    )


def test_defaults_and_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}", "config.json"))
    assert config.task is None and config.threshold is None and config.runtime == {}
    assert load_config(write(tmp_path, "positive_class: 1\n")).positive_class == 1
    assert msgspec.to_builtins(ReleaseConfig(threshold=0.5)) == {"threshold": 0.5}


@pytest.mark.parametrize("threshold", ["1.5", "-0.1", ".nan"])
def test_threshold_outside_unit_interval(tmp_path: Path, threshold: str) -> None:
    message = config_error(tmp_path, f"threshold: {threshold}\n")
    assert "is outside [0, 1] at $.threshold in " in message
    assert "config.yaml: set a probability between 0 and 1" in message


def test_unknown_task(tmp_path: Path) -> None:
    message = config_error(tmp_path, "task: clasification\n")
    assert message.startswith("unknown task 'clasification' at $.task in ")
    assert message.endswith("use one of classification, regression")


def test_unknown_key_suggests(tmp_path: Path) -> None:
    message = config_error(tmp_path, "treshold: 0.5\n")
    assert message.startswith("unknown key 'treshold' at $ in ")
    assert message.endswith("did you mean 'threshold'?")


def test_wrong_types(tmp_path: Path) -> None:
    message = config_error(tmp_path, "threshold: high\n")
    assert "Expected `float | null`, got `str` at $.threshold in" in message
    message = config_error(tmp_path, "labels: [legit, yes]\n")
    assert "at $.labels[1]" in message and "quote the value" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("task: regression\nthreshold: 0.5\n", "threshold is set but the task is regression"),
        ("task: regression\nlabels: [a, b]\n", "labels is set but the task is regression"),
        ("labels: [a]\n", "names fewer than 2 classes at $.labels"),
        ("labels: [a, a]\n", "repeats a name at $.labels"),
        ("max_event_bytes: 0\n", "max_event_bytes 0 is not positive at $.max_event_bytes"),
    ],
)
def test_semantic_checks(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"Config file '.*config\.yaml' not found"):
        load_config(tmp_path / "config.yaml")
    assert "invalid YAML in" in config_error(tmp_path, "threshold: [0.5\n")
    assert "is empty" in config_error(tmp_path, "")
    assert "expected" in config_error(tmp_path, "- 1\n").lower()


def test_from_builtins_names_source() -> None:
    with pytest.raises(SchemaError, match=r"at \$\.threshold in manifest"):
        config_from_builtins({"threshold": 2})
