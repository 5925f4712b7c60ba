"""What every flavor loader shares: finding the entry file, naming what a file really is,
importing optional libraries, and turning raw scores into a `ModelOutput`.

Private to `headrace.runtimes`: the flavor modules use it, users never import it.
"""

from __future__ import annotations

import codecs
import importlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from headrace.errors import DependencyMissingError, ModelLoadError
from headrace.runtimes.base import ModelOutput
from headrace.types import Array

# How a user saves a model of each flavor, quoted in "how to fix it" messages.
SAVE_HOWTO = {
    "sklearn": "joblib.dump(model, 'model.joblib')",
    "lightgbm": "booster.save_model('model.txt') (for LGBMClassifier: model.booster_.save_model)",
    "xgboost": "model.save_model('model.json')",
    "onnx": "skl2onnx.to_onnx(...) or torch.onnx.export(...)",
    "torch": "torch.jit.script(model).save('model.pt') or torch.export.save(program, 'model.pt2')",
    "python": "a .py file and the entry 'file.py:attribute'",
}

EXPORTED_PROGRAM = "a torch.export program"
TORCH_CHECKPOINT = "a torch.save() checkpoint (pickled weights or module, not TorchScript)"

_SNIFF_BYTES = 4096
_COMPRESSED_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x04\x22\x4d\x18": "lz4",
    b"\x78\x01": "zlib",
    b"\x78\x5e": "zlib",
    b"\x78\x9c": "zlib",
    b"\x78\xda": "zlib",
}
# Field tags that can follow `ir_version` (field 1) at the start of an ONNX ModelProto.
_ONNX_SECOND_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42})
_XGBOOST_LOG_PREFIX = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] \S+: ")


@dataclass(frozen=True, slots=True)
class Sniff:
    """What a file looks like from its first bytes.

    Parameters
    ----------
    description
        Words for a message, e.g. ``"a pickle file"``.
    flavor
        The flavor that can load such a file, else None.
    """

    description: str
    flavor: str | None = None


def sniff(path: Path) -> Sniff:
    """Say what `path` looks like, reading at most its first 4 KiB (zip listings aside)."""
    if path.is_dir():
        return Sniff("a directory")
    try:
        with path.open("rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError as exc:
        return Sniff(f"an unreadable file ({exc.strerror or exc})")
    if not head:
        return Sniff("an empty file")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return Sniff("a pickle file", "sklearn")
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            return Sniff(f"{kind}-compressed data (a compressed joblib file?)")
    if head.startswith((b"tree\n", b"tree\r\n")):
        return Sniff("a LightGBM text model", "lightgbm")
    if b"learner" in head[:64] and head.startswith(b"{"):
        if head.startswith(b'{"'):
            return Sniff("an XGBoost JSON model", "xgboost")
        return Sniff("an XGBoost UBJSON model", "xgboost")
    if len(head) > 3 and head[0] == 0x08 and head[2] in _ONNX_SECOND_TAGS:
        return Sniff("an ONNX model", "onnx")
    text = _as_text(head)
    if text is None:
        return Sniff(f"binary data starting with bytes {head[:8].hex(' ')}")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return Sniff("a JSON document")
    first = stripped.splitlines()[0] if stripped else ""
    if path.suffix == ".py" or first.startswith(("import ", "from ", "def ", "class ", "#!")):
        return Sniff("Python source", "python")
    if not first:
        return Sniff("a blank text file")
    shown = first if len(first) <= 40 else first[:37] + "..."
    return Sniff(f"text starting with {shown!r}")


def _sniff_zip(path: Path) -> Sniff:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return Sniff("a damaged zip archive")
    if any(name.endswith("/archive_format") for name in names):
        return Sniff(EXPORTED_PROGRAM, "torch")
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        return Sniff("a TorchScript archive", "torch")
    if any(name.endswith("/data.pkl") for name in names):
        return Sniff(TORCH_CHECKPOINT)
    return Sniff("a zip archive")


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        # final=False: the 4 KiB cut may split a multi-byte character.
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None


def entry_path(model_dir: Path, *, entry: str, flavor: str) -> Path:
    """Return the entry file inside `model_dir`, or raise `ModelLoadError` naming it."""
    path = model_dir / entry
    if not path.exists():
        raise ModelLoadError(
            f"Model file '{path}' does not exist (flavor {flavor}, entry '{entry}'). "
            f"Check that the release's entry names a file in '{model_dir}'."
        )
    if path.is_dir():
        raise ModelLoadError(
            f"Model entry '{path}' is a directory, not a file (flavor {flavor}). "
            "Set the entry to the model file inside it."
        )
    return path


def module_file(model_dir: Path, name: str) -> str:
    """The file of an entry's module part: ``file.py`` as is, ``pkg.mod`` as ``pkg/mod.py``."""
    if name.endswith(".py") or "/" in name:
        return name
    relative = name.replace(".", "/")
    if (model_dir / relative / "__init__.py").is_file():
        return f"{relative}/__init__.py"
    return f"{relative}.py"


def import_optional(module: str, *, package: str, extra: str, flavor: str) -> ModuleType:
    """Import `module`, or raise `DependencyMissingError` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is None or exc.name == module or exc.name.startswith(module + "."):
            raise DependencyMissingError(package, extra, f"the {flavor} flavor") from exc
        raise ModelLoadError(
            f"Package '{package}' is installed but cannot be imported "
            f"({type(exc).__name__}: {reason(exc)}). Reinstall it: "
            f"pip install --force-reinstall 'headrace[{extra}]'."
        ) from exc


def reason(exc: BaseException) -> str:
    """One line from a library's exception: no stack trace, no log prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = _XGBOOST_LOG_PREFIX.sub("", lines[0]).rstrip(".") if lines else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def not_a_model(
    path: Path, *, flavor: str, exc: BaseException | None = None, looks_like: str | None = None
) -> ModelLoadError:
    """Build the one-line error for a file the `flavor` library could not load.

    When the file does look like a model of `flavor`, the library's own reason is kept
    (a truncated file, a version mismatch); otherwise the message says what the file
    looks like and which flavor would load it.
    """
    found = sniff(path)
    seen = looks_like or found.description
    if found.flavor == flavor and looks_like is None:
        why = reason(exc) if exc is not None else "the library rejected it"
        return ModelLoadError(
            f"Cannot load '{path}' with the {flavor} flavor: {why}. The file may be truncated "
            f"or written by an incompatible library version; re-save it with "
            f"{SAVE_HOWTO[flavor]}."
        )
    if found.flavor is not None and found.flavor != flavor:
        fix = f"Register it with --flavor {found.flavor}."
    else:
        fix = f"Register it with the right --flavor, or save the model with {SAVE_HOWTO[flavor]}."
    return ModelLoadError(
        f"Cannot load '{path}' with the {flavor} flavor: it looks like {seen}. {fix}"
    )


_AUTO_NAME = re.compile(r"^Column_(\d+)$")


def real_names(names: Any) -> tuple[str, ...] | None:
    """`names` as a tuple, or None when they are LightGBM's stand-ins (``Column_0``...)
    for a model fitted without column names."""
    if names is None:
        return None
    listed = tuple(str(n) for n in names)
    if not listed:
        return None
    auto = all(
        (m := _AUTO_NAME.match(n)) is not None and int(m.group(1)) == i
        for i, n in enumerate(listed)
    )
    return None if auto else listed


OUTPUT_MODES = ("auto", "values", "probability", "logits")


def output_mode(options: dict[str, Any], *, flavor: str) -> str:
    """Read ``options["output"]``: how to read a model's raw scores."""
    mode = options.get("output", "auto")
    if mode not in OUTPUT_MODES:
        raise ModelLoadError(
            f"Runtime option output={mode!r} for the {flavor} flavor is not one of "
            f"{', '.join(OUTPUT_MODES)}. Fix the 'runtime' section of the release config."
        )
    return str(mode)


def as_probabilities(values: Any) -> Array:
    """`values` as a float64 2-D array (no copy when it already is one)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D probability matrix, got shape {array.shape}")
    return array


def binary_output(positive: Array, *, tie_is_positive: bool = True) -> ModelOutput:
    """Classes ``[0, 1]`` from the positive-class probability `p`.

    The label is 1 when ``p >= 0.5``, or ``p > 0.5`` with ``tie_is_positive=False`` (what
    LightGBM's and XGBoost's own classifiers answer, so their labels match exactly).
    """
    p = np.asarray(positive, dtype=np.float64).reshape(-1)
    probabilities = np.column_stack((1.0 - p, p))
    positive_label = p >= 0.5 if tie_is_positive else p > 0.5
    return ModelOutput(
        predictions=positive_label.astype(np.int64),
        probabilities=probabilities,
        classes=np.array([0, 1], dtype=np.int64),
    )


def class_output(probabilities: Array, *, classes: Array | None = None) -> ModelOutput:
    """Predict the most probable class of each row."""
    proba = as_probabilities(probabilities)
    labels = np.arange(proba.shape[1], dtype=np.int64) if classes is None else classes
    if labels.shape[0] != proba.shape[1]:
        raise ValueError(
            f"the model returned {proba.shape[1]} probability columns for {labels.shape[0]} classes"
        )
    return ModelOutput(
        predictions=labels[np.argmax(proba, axis=1)], probabilities=proba, classes=labels
    )


def sigmoid(values: Array) -> Array:
    """The logistic function, without overflow warnings for large margins."""
    x = np.asarray(values, dtype=np.float64)
    e = np.exp(-np.abs(x))
    result: Array = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return result


def softmax(values: Array) -> Array:
    """Row-wise softmax, shifted by the row maximum so it cannot overflow."""
    x = np.asarray(values, dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    result: Array = e / e.sum(axis=1, keepdims=True)
    return result


def _rows_are_probabilities(matrix: Array) -> bool:
    # float32 models: rows sum to 1 within ~1e-6; 1e-4 leaves room, logits never land there.
    if matrix.size == 0:
        return True
    inside = bool(np.all((matrix >= -1e-6) & (matrix <= 1.0 + 1e-6)))
    return inside and bool(np.allclose(matrix.sum(axis=1), 1.0, atol=1e-4))


def scores_output(scores: Any, *, mode: str) -> ModelOutput:
    """Read a network's raw output tensor.

    ``(n,)`` or ``(n, 1)``: values, or with ``mode="probability"`` the positive-class
    probability (``"logits"``: its logit). ``(n, k >= 2)``: class scores, turned into
    probabilities with a softmax when ``mode="logits"`` or when the rows are not already
    probabilities; ``mode="values"`` keeps them as a multi-target regression.
    """
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim == 1:
        if mode == "probability":
            return binary_output(array)
        if mode == "logits":
            return binary_output(sigmoid(array))
        return ModelOutput(predictions=array)
    if array.ndim != 2:
        raise ValueError(f"expected model output of shape (n,) or (n, k), got {array.shape}")
    if mode == "values":
        return ModelOutput(predictions=array)
    if mode == "logits" or (mode == "auto" and not _rows_are_probabilities(array)):
        array = softmax(array)
    return class_output(array)
