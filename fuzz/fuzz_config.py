"""Coverage-guided fuzzing (atheris) of the YAML config loaders.

Run by hand (``pip install atheris``)::

    python fuzz/fuzz_config.py fuzz/corpus/config -max_total_time=600

Each input is read as the file of a pipeline spec, a serve config and a release schema
are: `load_yaml` (size, nesting and alias expansion bounded) and then each loader's
validation. A `HeadraceError` with a one-line message is the expected answer to
garbage; any other exception, or a message of several lines, is a crash atheris reports
(the input saved as ``crash-*``). New inputs that reach new code go into the corpus
directory: commit the small ones.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from headrace._env import load_yaml
    from headrace.errors import ConfigError, HeadraceError, PipelineSpecError, SchemaError
    from headrace.pipeline.spec import pipeline_spec_from_dict
    from headrace.release.schema import schema_from_builtins
    from headrace.serving.config import serve_spec_from_dict


def _one_line(exc: HeadraceError) -> None:
    if "\n" in str(exc) or "\r" in str(exc):
        raise AssertionError(f"a message of several lines: {str(exc)!r}")


def target(data: bytes) -> None:
    """One file, read by the three loaders."""
    for error, build in (
        (PipelineSpecError, lambda doc: pipeline_spec_from_dict(doc, where="p.yaml")),
        (ConfigError, lambda doc: serve_spec_from_dict(doc, where="s.yaml")),
        (SchemaError, lambda doc: schema_from_builtins(doc, source="schema.yaml")),
    ):
        try:
            build(load_yaml(data, where="f.yaml", error=error))
        except HeadraceError as exc:
            _one_line(exc)


if __name__ == "__main__":
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
