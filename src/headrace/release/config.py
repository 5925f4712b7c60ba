"""The release config: how a model's raw output becomes a prediction and a score.

Written by hand (YAML or JSON) and stored in the release manifest. Everything is optional:
an empty mapping means "infer the task from the model output, use the model's own
predictions and class names".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec

from headrace.release.schema import _convert, _read_document, _SpecError

__all__ = ["TASKS", "ReleaseConfig", "Task", "config_from_builtins", "load_config"]

Task = Literal["classification", "regression"]
"""What the model predicts."""

TASKS: tuple[str, ...] = get_args(Task)
"""Every `Task`."""


class ReleaseConfig(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, omit_defaults=True
):
    """Pre- and post-processing settings of a release.

    Parameters
    ----------
    task
        ``classification`` or ``regression``; None infers it from the model output (class
        probabilities or class names mean classification).
    threshold
        Binary classifiers only: predict the positive class when its probability is
        >= `threshold` (in [0, 1]). None keeps the model's own prediction.
    labels
        Names for the model's classes, by position in the model's class order (e.g.
        ``[legit, fraud]`` for classes ``[0, 1]``).
    positive_class
        The positive class of a binary classifier, as a model class or one of `labels`;
        None means the last class.
    runtime
        Options passed to the flavor's runtime loader.
    max_event_bytes
        The largest encoded event a transport accepts; larger events are rejected.
    """

    task: Task | None = None
    threshold: float | None = None
    labels: list[str] | None = None
    positive_class: str | int | None = None
    runtime: dict[str, Any] = msgspec.field(default_factory=dict)
    max_event_bytes: int | None = None

    def __post_init__(self) -> None:
        t = self.threshold
        if t is not None and (math.isnan(t) or not 0.0 <= t <= 1.0):
            raise _SpecError(
                f"threshold {t!r} is outside [0, 1]",
                "set a probability between 0 and 1 "
                "(the positive class wins when its probability >= threshold)",
                at=".threshold",
            )
        if self.task == "regression":
            for key in ("threshold", "labels", "positive_class"):
                if getattr(self, key) is not None:
                    raise _SpecError(
                        f"{key} is set but the task is regression",
                        f"remove `{key}` or set `task: classification`",
                        at=f".{key}",
                    )
        if self.labels is not None:
            if len(self.labels) < 2:
                raise _SpecError(
                    f"labels {self.labels!r} names fewer than 2 classes",
                    "list one name per model class, in the model's class order",
                    at=".labels",
                )
            if len(set(self.labels)) != len(self.labels):
                raise _SpecError(
                    f"labels {self.labels!r} repeats a name",
                    "give every class a distinct name",
                    at=".labels",
                )
        if self.max_event_bytes is not None and self.max_event_bytes < 1:
            raise _SpecError(
                f"max_event_bytes {self.max_event_bytes} is not positive",
                "set a size in bytes (e.g. 65536) or remove it",
                at=".max_event_bytes",
            )


_CONFIG_KEYS: tuple[str, ...] = ReleaseConfig.__struct_fields__


def config_from_builtins(data: Any, *, source: str = "manifest") -> ReleaseConfig:
    """Build a `ReleaseConfig` from decoded YAML/JSON (or ``msgspec.to_builtins`` output).

    Raises
    ------
    SchemaError
        When `data` is not a valid config; the message names `source`, the path and the fix.
    """
    return _convert(data, ReleaseConfig, source=source, keys=_CONFIG_KEYS, choices={"task": TASKS})


def load_config(path: Path) -> ReleaseConfig:
    """Read a release config file (YAML, or JSON for ``.json``).

    Raises
    ------
    SchemaError
        When the file is missing, unreadable, not YAML/JSON, or holds an invalid config
        (unknown key, threshold outside [0, 1], ...); the message names the file, the path
        inside it and the fix.
    """
    return config_from_builtins(_read_document(path, what="Config"), source=str(path))
