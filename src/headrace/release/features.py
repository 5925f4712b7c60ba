"""The feature spec: which schema fields the model reads, in which order.

`definitions` is kept verbatim for the feature-store work (online reads, windowed
aggregates); today only `inputs` changes what the model sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from headrace.errors import SchemaError
from headrace.release.schema import Schema, _convert, _read_document, _SpecError

__all__ = ["FeatureSpec", "features_from_builtins", "load_features", "model_inputs"]


class FeatureSpec(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, omit_defaults=True
):
    """Which fields feed the model.

    Parameters
    ----------
    inputs
        The model's input columns, in the order it was trained on; None means every schema
        field in schema order.
    definitions
        Free-form feature definitions, stored with the release for later use.
    """

    inputs: list[str] | None = None
    definitions: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.inputs is None:
            return
        if not self.inputs:
            raise _SpecError(
                "inputs is an empty list",
                "list the model's input fields, or remove `inputs` to use every schema field",
                at=".inputs",
            )
        for i, name in enumerate(self.inputs):
            if name in self.inputs[:i]:
                raise _SpecError(
                    f"input '{name}' is listed twice", "list every input once", at=f".inputs[{i}]"
                )


_FEATURE_KEYS: tuple[str, ...] = FeatureSpec.__struct_fields__


def features_from_builtins(data: Any, *, source: str = "manifest") -> FeatureSpec:
    """Build a `FeatureSpec` from decoded YAML/JSON (or ``msgspec.to_builtins`` output).

    Raises
    ------
    SchemaError
        When `data` is not a valid feature spec.
    """
    return _convert(data, FeatureSpec, source=source, keys=_FEATURE_KEYS)


def load_features(path: Path) -> FeatureSpec:
    """Read a feature spec file (YAML, or JSON for ``.json``).

    Raises
    ------
    SchemaError
        When the file is missing, unreadable, not YAML/JSON, or holds an invalid spec; the
        message names the file, the path inside it and the fix.
    """
    return features_from_builtins(_read_document(path, what="Features"), source=str(path))


def model_inputs(schema: Schema, features: FeatureSpec | None = None) -> list[str]:
    """Return the model's input columns, in order.

    Parameters
    ----------
    schema
        The release's input schema.
    features
        The release's feature spec; None (or a spec without `inputs`) means every schema
        field in schema order.

    Raises
    ------
    SchemaError
        When an input is not a schema field; the message names every unknown input.
    """
    if features is None or features.inputs is None:
        return schema.names
    known = set(schema.names)
    unknown = [name for name in features.inputs if name not in known]
    if unknown:
        raise SchemaError(
            f"feature inputs {', '.join(repr(n) for n in unknown)} are not fields of the "
            f"schema (its fields are {', '.join(schema.names)}): add them to the schema or "
            "remove them from `inputs`"
        )
    return list(features.inputs)
