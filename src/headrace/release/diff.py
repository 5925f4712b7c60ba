"""What changed between two releases, part by part."""

from __future__ import annotations

from typing import Any

import msgspec

from headrace.release.manifest import Manifest

__all__ = ["PARTS", "ReleaseDiff", "diff_manifests", "diff_rows", "model_digest"]

PARTS = ("model", "schema", "features", "config", "data", "metrics", "lineage")
"""The parts of a `ReleaseDiff`, in the order people read them."""


def model_digest(manifest: Manifest) -> str:
    """One digest for the model files: their sorted ``path:sha256`` lines, hashed."""
    import hashlib

    lines = sorted(f"{f.path}:{f.sha256}" for f in manifest.model.files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class ReleaseDiff(msgspec.Struct, frozen=True, kw_only=True):
    """Differences between release `a` and release `b` (empty parts are unchanged).

    `schema` lists fields added, removed and changed (with the attributes that changed);
    `metrics` maps each metric to ``[a, b, b - a]`` (None where one side lacks it).
    """

    a: str
    b: str
    model: dict[str, Any]
    schema: dict[str, Any]
    features: dict[str, Any]
    config: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, list[float | None]]
    lineage: dict[str, Any]

    @property
    def unchanged(self) -> bool:
        """Whether nothing but the version, time and author differs."""
        return not any(
            (self.model, self.schema, self.features, self.config, self.data, self.metrics)
        )


def _changed(a: Any, b: Any) -> dict[str, Any]:
    """Key -> [a, b] for keys whose values differ between two builtins mappings."""
    left = msgspec.to_builtins(a) or {}
    right = msgspec.to_builtins(b) or {}
    return {
        key: [left.get(key), right.get(key)]
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    }


def _signature_inputs(manifest: Manifest) -> list[str] | None:
    """The model's input order from its signature (None for a release without one)."""
    signature = manifest.input_signature
    return None if signature is None else signature.names


def diff_manifests(a: Manifest, b: Manifest) -> ReleaseDiff:
    """Compare two manifests: model digest, schema, features, config, data, metrics."""
    model: dict[str, Any] = {}
    if a.model.flavor != b.model.flavor:
        model["flavor"] = [a.model.flavor, b.model.flavor]
    digest_a, digest_b = model_digest(a), model_digest(b)
    if digest_a != digest_b:
        model["digest"] = [digest_a, digest_b]
    if a.model.entry != b.model.entry:
        model["entry"] = [a.model.entry, b.model.entry]
    inputs_a, inputs_b = _signature_inputs(a), _signature_inputs(b)
    if inputs_a != inputs_b:
        model["signature"] = [inputs_a, inputs_b]

    fields_a = {f.name: msgspec.to_builtins(f) for f in a.schema.fields}
    fields_b = {f.name: msgspec.to_builtins(f) for f in b.schema.fields}
    schema: dict[str, Any] = {}
    added = [name for name in fields_b if name not in fields_a]
    removed = [name for name in fields_a if name not in fields_b]
    changed = {
        name: _changed(fields_a[name], fields_b[name])
        for name in fields_a
        if name in fields_b and fields_a[name] != fields_b[name]
    }
    if added:
        schema["added"] = added
    if removed:
        schema["removed"] = removed
    if changed:
        schema["changed"] = changed
    order_a = [n for n in fields_a if n in fields_b]
    order_b = [n for n in fields_b if n in fields_a]
    if order_a != order_b:
        schema["order"] = [order_a, order_b]

    data: dict[str, Any] = {}
    if (a.data is None) != (b.data is None) or (
        a.data is not None and b.data is not None and a.data.sha256 != b.data.sha256
    ):
        data = _changed(a.data, b.data)

    metrics: dict[str, list[float | None]] = {}
    for key in sorted(set(a.metrics) | set(b.metrics)):
        left, right = a.metrics.get(key), b.metrics.get(key)
        if left != right:
            delta = right - left if left is not None and right is not None else None
            metrics[key] = [left, right, delta]

    pairs: dict[str, list[str | None]] = {
        "parent": [a.parent, b.parent],
        "code_version": [a.code_version, b.code_version],
        "created_by": [a.created_by, b.created_by],
        "created_at": [a.created_at, b.created_at],
    }
    lineage = {key: value for key, value in pairs.items() if value[0] != value[1]}
    return ReleaseDiff(
        a=a.ref,
        b=b.ref,
        model=model,
        schema=schema,
        features=_changed(a.features, b.features),
        config=_changed(a.config, b.config),
        data=data,
        metrics=metrics,
        lineage=lineage,
    )


def _pairs(prefix: str, changes: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``{key: [a, b]}`` (nested mappings of them too) as (dotted key, a, b)."""
    rows: list[tuple[str, Any, Any]] = []
    for key, value in changes.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_pairs(f"{name}.", value))
        else:
            rows.append((name, value[0], value[1]))
    return rows


def diff_rows(diff: ReleaseDiff) -> list[tuple[str, str, Any, Any]]:
    """The differences one per line: (part, what, value in `a`, value in `b`).

    Schema fields read ``amount.min``; fields added or removed have None on the side that
    lacks them; a metric's `b` value is ``(b, b - a)``; an unchanged part is one row
    ``(part, "", None, None)``.
    """
    rows: list[tuple[str, str, Any, Any]] = []
    for part in PARTS:
        changes: dict[str, Any] = getattr(diff, part)
        before = len(rows)
        if part == "schema":
            for name in changes.get("added", []):
                rows.append((part, name, None, "added"))
            for name in changes.get("removed", []):
                rows.append((part, name, "removed", None))
            rows.extend((part, *row) for row in _pairs("", changes.get("changed", {})))
            if "order" in changes:
                rows.append((part, "order", *changes["order"]))
        elif part == "metrics":
            for key, (left, right, delta) in changes.items():
                rows.append((part, key, left, right if delta is None else (right, delta)))
        else:
            rows.extend((part, *row) for row in _pairs("", changes))
        if len(rows) == before:
            rows.append((part, "", None, None))
    return rows
