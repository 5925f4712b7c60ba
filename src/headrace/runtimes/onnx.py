"""The ``onnx`` flavor: any ONNX model with one input, run by onnxruntime on the CPU.

The batch is fed as the input's element type (``float32`` for ``tensor(float)``). Outputs
are read by type and shape, not by name alone:

- one output: labels when it is an integer or string tensor, otherwise scores read like
  the torch flavor's (``(n,)``/``(n, 1)`` values, ``(n, k)`` class scores; runtime option
  ``output`` = ``values``, ``probability`` or ``logits`` says how);
- two outputs (what skl2onnx writes for a classifier): the labels, and the probabilities as
  a 2-D tensor or, with ``zipmap``, a list of ``{class: probability}`` dicts.

Class labels come from the runtime option ``classes``, else the ZipMap keys, else the
classifier node in the graph (read with the ``onnx`` package when installed), else
``0..k-1`` for integer labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ModelLoadError
from headrace.runtimes._common import (
    as_probabilities,
    entry_path,
    import_optional,
    not_a_model,
    output_mode,
    scores_output,
)
from headrace.runtimes.base import LoadedModel, ModelOutput, NativeSignature
from headrace.types import Array, Matrix

__all__ = ["ONNXModel", "load"]

_INPUT_TYPES: dict[str, type[Any]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
_FLOAT_TYPES = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)"})
_LABEL_TYPES = frozenset({"tensor(int64)", "tensor(int32)", "tensor(string)", "tensor(bool)"})


class ONNXModel:
    """A loaded onnxruntime ``InferenceSession`` and how to read its outputs.

    Parameters
    ----------
    session
        The ``onnxruntime.InferenceSession``.
    input_name, input_dtype
        The single input and the numpy dtype it takes.
    scores
        The single scores output, read with `mode` (exclusive with `labels`/`probabilities`).
    labels, probabilities
        The label output and the probabilities output (either may be None).
    zipmap
        True when `probabilities` is a sequence of ``{class: probability}`` maps.
    classes
        The class labels in probability-column order, when known before the first batch.
    mode
        The ``output`` runtime option, for `scores`.
    columns
        ``(name, dtype)`` of each input when the graph takes one ``[None, 1]`` tensor per
        column (what ``skl2onnx`` writes for named ``initial_types``); the matrix's columns
        feed them in this order. None for a single 2-D input.
    """

    __slots__ = (
        "_classes",
        "_columns",
        "_dtype",
        "_input",
        "_labels",
        "_mode",
        "_probabilities",
        "_scores",
        "_session",
        "_zipmap",
        "flavor",
    )

    def __init__(
        self,
        session: Any,
        *,
        input_name: str,
        input_dtype: type[Any],
        scores: str | None = None,
        labels: str | None = None,
        probabilities: str | None = None,
        zipmap: bool = False,
        classes: Array | None = None,
        mode: str = "auto",
        columns: tuple[tuple[str, type[Any]], ...] | None = None,
    ) -> None:
        self.flavor = "onnx"
        self._columns = columns
        self._session = session
        self._input = input_name
        self._dtype = input_dtype
        self._scores = scores
        self._labels = labels
        self._probabilities = probabilities
        self._zipmap = zipmap
        self._classes = classes
        self._mode = mode

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Run the session on the whole batch."""
        if self._columns is None:
            return self._run({self._input: np.ascontiguousarray(matrix, dtype=self._dtype)})
        return self._run(
            {
                name: np.asarray(matrix[:, j], dtype=dtype).reshape(-1, 1)
                for j, (name, dtype) in enumerate(self._columns)
            }
        )

    def reference_predict(self, frame: Any) -> ModelOutput:
        """Feed a DataFrame's columns to the graph inputs of the same names."""
        if self._columns is None:
            return self._run({self._input: frame.to_numpy(dtype=self._dtype)})
        return self._run(
            {
                name: frame[name].to_numpy(dtype=dtype).reshape(-1, 1)
                for name, dtype in self._columns
            }
        )

    def signature(self) -> NativeSignature:
        """The graph's inputs (names only when there is one per column) and outputs."""
        inputs = self._session.get_inputs()
        outputs = tuple((o.name, o.type, _shape(o.shape)) for o in self._session.get_outputs())
        classes = None if self._classes is None else tuple(self._classes.tolist())
        if self._columns is not None:
            return NativeSignature(
                names=tuple(name for name, _ in self._columns),
                n_features=len(self._columns),
                dtypes=tuple(i.type for i in inputs),
                numeric_only=all(dtype is not np.object_ for _, dtype in self._columns),
                outputs=outputs,
                classes=classes,
                source="onnx graph inputs",
            )
        shape = list(inputs[0].shape or [])
        width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        return NativeSignature(
            n_features=width,
            dtypes=(inputs[0].type,),
            numeric_only=self._dtype is not np.object_,
            outputs=outputs,
            classes=classes,
            source=f"onnx input {self._input} shape {shape}",
        )

    def _run(self, feed: dict[str, Any]) -> ModelOutput:
        if self._scores is not None:
            (scores,) = self._session.run([self._scores], feed)
            return scores_output(scores, mode=self._mode)
        names = [name for name in (self._labels, self._probabilities) if name is not None]
        results = dict(zip(names, self._session.run(names, feed), strict=True))
        predictions = None
        if self._labels is not None:
            predictions = np.asarray(results[self._labels])
            if predictions.ndim == 2 and predictions.shape[1] == 1:
                predictions = predictions.reshape(-1)
        if self._probabilities is None:
            return ModelOutput(predictions=_required(predictions))
        raw = results[self._probabilities]
        if self._zipmap:
            probabilities, classes = self._from_zipmap(raw)
        else:
            probabilities = as_probabilities(raw)
            classes = self._classes_for(probabilities.shape[1])
        if predictions is None:
            predictions = classes[np.argmax(probabilities, axis=1)]
        return ModelOutput(predictions=predictions, probabilities=probabilities, classes=classes)

    def _from_zipmap(self, rows: Sequence[dict[Any, float]]) -> tuple[Array, Array]:
        if self._classes is not None:
            keys: list[Any] = list(self._classes)
        else:
            keys = list(rows[0]) if len(rows) else []
        matrix = np.array([[row[key] for key in keys] for row in rows], dtype=np.float64)
        classes = self._classes if self._classes is not None else np.array(keys)
        return matrix.reshape(len(rows), len(keys)), classes

    def _classes_for(self, columns: int) -> Array:
        if self._classes is not None:
            if len(self._classes) != columns:
                raise ValueError(
                    f"the model returned {columns} probability columns for "
                    f"{len(self._classes)} classes"
                )
            return self._classes
        # Without labels from the graph, integer labels are taken as column indices.
        return np.arange(columns, dtype=np.int64)

    def __repr__(self) -> str:
        return f"ONNXModel(input={self._input!r})"


def _shape(shape: Any) -> tuple[int | None, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in shape)


def _required(predictions: Array | None) -> Array:
    if predictions is None:  # pragma: no cover - load() never builds this combination
        raise ValueError("the ONNX model has neither a label nor a probabilities output")
    return predictions


def load(model_dir: Path, entry: str, options: dict[str, Any]) -> LoadedModel:
    """Open an ONNX model in an onnxruntime CPU session.

    Parameters
    ----------
    model_dir
        The directory holding the release's model files.
    entry
        The file name inside `model_dir`, e.g. ``model.onnx``.
    options
        ``output``: how to read a single scores output (``auto``, ``values``,
        ``probability``, ``logits``); ``classes``: the class labels in probability order.

    Raises
    ------
    ModelLoadError
        The file is missing, not an ONNX model, or its inputs/outputs are not ones headrace
        can feed or read.
    DependencyMissingError
        onnxruntime is not installed.
    """
    path = entry_path(model_dir, entry=entry, flavor="onnx")
    mode = output_mode(options, flavor="onnx")
    ort = import_optional("onnxruntime", package="onnxruntime", extra="onnx", flavor="onnx")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        outputs = session.get_outputs()
    except Exception as exc:
        raise not_a_model(path, flavor="onnx", exc=exc) from exc
    columns = _column_inputs(inputs)
    if columns is None and (len(inputs) != 1 or inputs[0].type not in _INPUT_TYPES):
        found = ", ".join(f"{i.name} {i.type}" for i in inputs)
        raise ModelLoadError(
            f"Cannot load '{path}' with the onnx flavor: it has the inputs ({found}); headrace "
            "feeds one 2-D numeric tensor with a column per model input, or one [None, 1] "
            "tensor per column. Re-export the model with a single input of shape "
            "[None, n_features]."
        )
    input_name, input_dtype = inputs[0].name, _INPUT_TYPES[inputs[0].type]
    return _model(
        session,
        path=path,
        options=options,
        outputs=outputs,
        base={
            "input_name": input_name,
            "input_dtype": input_dtype,
            "columns": columns,
            "mode": mode,
        },
    )


def _column_inputs(inputs: Sequence[Any]) -> tuple[tuple[str, type[Any]], ...] | None:
    """``(name, dtype)`` per input when every input is one ``[None, 1]`` column, else None."""
    if len(inputs) < 2:
        return None
    for i in inputs:
        shape = list(i.shape or [])
        if i.type not in _INPUT_TYPES or len(shape) != 2 or shape[1] != 1:
            return None
    return tuple((i.name, _INPUT_TYPES[i.type]) for i in inputs)


def _model(
    session: Any,
    *,
    path: Path,
    options: dict[str, Any],
    outputs: Sequence[Any],
    base: dict[str, Any],
) -> ONNXModel:
    """The `ONNXModel` reading `outputs` by type and shape; `base` holds the input fields."""
    option_classes = _option_classes(options, path=path)
    if len(outputs) == 1:
        out = outputs[0]
        if out.type in _LABEL_TYPES:
            return ONNXModel(session, labels=out.name, **base)
        if out.type.startswith("seq(map"):
            return ONNXModel(
                session,
                probabilities=out.name,
                zipmap=True,
                classes=option_classes,
                **base,
            )
        return ONNXModel(session, scores=out.name, **base)
    labels, probabilities = _pick_outputs(outputs, path=path)
    zipmap = probabilities.type.startswith("seq(map")
    classes = option_classes
    if classes is None and not zipmap:
        classes = _graph_classes(path, label_output=labels.name)
        if classes is None and labels.type == "tensor(string)":
            raise ModelLoadError(
                f"Cannot load '{path}' with the onnx flavor: its class labels are strings and "
                "cannot be read without the 'onnx' package. Run pip install onnx, or set "
                "'classes' in the release config's runtime section."
            )
    return ONNXModel(
        session,
        labels=labels.name,
        probabilities=probabilities.name,
        zipmap=zipmap,
        classes=classes,
        **base,
    )


def _pick_outputs(outputs: Sequence[Any], *, path: Path) -> tuple[Any, Any]:
    """Tell the label output from the probabilities output by type and shape."""

    def looks_like_probabilities(out: Any) -> bool:
        if out.type.startswith("seq(map"):
            return True
        shape = list(out.shape or [])
        return out.type in _FLOAT_TYPES and len(shape) == 2 and shape[1] != 1

    if len(outputs) == 2:
        first, second = outputs
        if looks_like_probabilities(first) != looks_like_probabilities(second):
            return (second, first) if looks_like_probabilities(first) else (first, second)
        # Same shape class (e.g. symbolic shapes): fall back to the conventional names.
        if "prob" in second.name.lower() or "label" in first.name.lower():
            return first, second
        if "prob" in first.name.lower() or "label" in second.name.lower():
            return second, first
    found = ", ".join(f"{o.name} {o.type} {list(o.shape or [])}" for o in outputs)
    raise ModelLoadError(
        f"Cannot load '{path}' with the onnx flavor: cannot tell its outputs apart ({found}). "
        "Export either one scores output, or a label output and a 2-D probabilities output."
    )


def _option_classes(options: dict[str, Any], *, path: Path) -> Array | None:
    classes = options.get("classes")
    if classes is None:
        return None
    array = np.asarray(classes)
    if array.ndim != 1 or array.size == 0:
        raise ModelLoadError(
            f"Runtime option classes={classes!r} for '{path}' must be a non-empty list of "
            "labels in probability-column order. Fix the release config's runtime section."
        )
    return array


def _graph_classes(path: Path, *, label_output: str) -> Array | None:
    """Read the class labels from the classifier node (ai.onnx.ml) that makes the labels."""
    try:
        onnx = import_optional("onnx", package="onnx", extra="onnx", flavor="onnx")
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return None  # the onnx package is optional: fall back to 0..k-1
    found: list[tuple[bool, Array]] = []
    for node in graph.node:
        if node.domain != "ai.onnx.ml":
            continue
        for attribute in node.attribute:
            labels: Array | None = None
            if attribute.name in ("classlabels_ints", "classlabels_int64s") and attribute.ints:
                labels = np.array(list(attribute.ints), dtype=np.int64)
            elif attribute.name == "classlabels_strings" and attribute.strings:
                labels = np.array([s.decode("utf-8") for s in attribute.strings], dtype=object)
            if labels is not None:
                found.append((label_output in node.output, labels))
    found.sort(key=lambda item: not item[0])  # the node that writes the labels first
    return found[0][1] if found else None
