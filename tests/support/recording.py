"""A real ``python``-flavor model that records every call it gets, to see when a
release was warmed up: each call appends its row count and the sum of its first column
to the file named by `CALLS_ENV`."""

from __future__ import annotations

from pathlib import Path

from headrace.registry import Registry, Release
from headrace.release.bundle import build_draft
from support.models import write_sklearn_release

CALLS_ENV = "HEADRACE_TEST_MODEL_CALLS"
MODEL = f"""
import os

import numpy as np


def predict(matrix):
    values = np.asarray(matrix, dtype=float)
    with open(os.environ[{CALLS_ENV!r}], "a") as log:
        log.write(f"{{len(values)}} {{float(values[:, 0].sum())!r}}\\n")
    return (values[:, 0] > 0).astype(np.int64)
"""


def register_recording_model(registry: Registry, root: Path) -> Release:
    """A release of `MODEL` with the sklearn helper's schema and training data."""
    files = write_sklearn_release(root / "data")
    directory = root / "model"
    directory.mkdir()
    (directory / "model.py").write_text(MODEL)
    scratch = root / "scratch"
    scratch.mkdir()
    draft = build_draft(
        Path(f"{directory / 'model.py'}:predict"),
        name="recorder",
        flavor="python",
        workdir=scratch,
        schema_path=files.schema,
        data_path=files.data,
        code_version="test",
    )
    release: Release = registry.register(draft, alias="champion")
    return release


def calls(path: Path) -> list[tuple[int, float]]:
    """The calls logged in `path`: (rows, sum of the first column), oldest first."""
    if not path.exists():
        return []
    return [
        (int(n), float(s))
        for n, s in (line.split() for line in path.read_text().split("\n") if line)
    ]
