"""The ``torch`` flavor: a TorchScript module or a ``torch.export`` program, run on the CPU.

TorchScript files come from ``torch.jit.script(model).save(path)`` or ``torch.jit.trace``;
programs from ``torch.export.save(torch.export.export(model, (example,)), "model.pt2")``
(export with a dynamic batch dimension). A plain ``torch.save`` checkpoint cannot be
loaded: it needs the model's Python class.

The batch goes in as one ``float32`` tensor under ``torch.inference_mode()``. The output is
read by shape: ``(n,)`` or ``(n, 1)`` are values (with runtime option
``output="probability"`` the positive-class probability, ``"logits"`` its logit);
``(n, k >= 2)`` are class scores for classes ``0..k-1``, turned into probabilities with a
softmax when ``output="logits"`` or when the rows are not already probabilities.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from headrace.errors import ModelLoadError
from headrace.runtimes._common import (
    EXPORTED_PROGRAM,
    SAVE_HOWTO,
    TORCH_CHECKPOINT,
    entry_path,
    import_optional,
    not_a_model,
    output_mode,
    scores_output,
    sniff,
)
from headrace.runtimes.base import LoadedModel, ModelOutput, NativeSignature
from headrace.types import Matrix

__all__ = ["TorchModel", "load"]


class TorchModel:
    """A loaded TorchScript module or exported program.

    Parameters
    ----------
    module
        The callable module, in eval mode.
    torch
        The imported ``torch`` package (imported lazily, so kept here).
    mode
        The ``output`` runtime option: ``auto``, ``values``, ``probability`` or ``logits``.
    """

    __slots__ = ("_module", "_torch", "_width", "flavor", "mode")

    def __init__(self, module: Any, *, torch: Any, mode: str, width: int | None = None) -> None:
        self.flavor = "torch"
        self.mode = mode
        self._module = module
        self._torch = torch
        self._width = width

    def reference_predict(self, frame: Any) -> ModelOutput:
        """Score a DataFrame's columns in order (a network has no column names)."""
        return self.predict(frame.to_numpy(dtype=np.float64))

    def signature(self) -> NativeSignature:
        """The input width an exported program declares; TorchScript declares none."""
        return NativeSignature(
            n_features=self._width,
            numeric_only=True,
            source="torch.export input shape" if self._width else "torch (no input spec)",
        )

    def predict(self, matrix: Matrix) -> ModelOutput:
        """Run the module on the whole batch as one float32 tensor."""
        batch = self._torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))
        with self._torch.inference_mode():
            out = self._module(batch)
        if not isinstance(out, self._torch.Tensor):
            raise TypeError(
                f"the torch model returned a {type(out).__name__}; it must return one tensor"
            )
        return scores_output(out.detach().cpu().numpy(), mode=self.mode)

    def __repr__(self) -> str:
        return f"TorchModel(mode={self.mode!r})"


def load(model_dir: Path, entry: str, options: dict[str, Any]) -> LoadedModel:
    """Load a TorchScript file or a ``torch.export`` program onto the CPU.

    Parameters
    ----------
    model_dir
        The directory holding the release's model files.
    entry
        The file name inside `model_dir`, e.g. ``model.pt`` or ``model.pt2``.
    options
        ``output``: how to read the output tensor (``auto``, ``values``, ``probability``,
        ``logits``).

    Raises
    ------
    ModelLoadError
        The file is missing, a ``torch.save`` checkpoint, or not a torch model.
    DependencyMissingError
        torch is not installed.
    """
    path = entry_path(model_dir, entry=entry, flavor="torch")
    mode = output_mode(options, flavor="torch")
    torch = import_optional("torch", package="torch", extra="torch", flavor="torch")
    found = sniff(path)
    if found.description == TORCH_CHECKPOINT:
        raise ModelLoadError(
            f"Cannot load '{path}' with the torch flavor: it is {TORCH_CHECKPOINT}, which needs "
            f"the model's Python code to rebuild. Save it with {SAVE_HOWTO['torch']}."
        )
    width: int | None = None
    try:
        if found.description == EXPORTED_PROGRAM:
            # An exported program's module() refuses .eval(): its mode was fixed at export.
            program = torch.export.load(str(path))
            width = _program_width(program)
            module = program.module()
        else:
            with warnings.catch_warnings():
                # torch 2.13 deprecates TorchScript in favour of torch.export; the files
                # still load, and the warning is for the exporter, not whoever serves them.
                warnings.filterwarnings(
                    "ignore",
                    message=r"`torch\.jit\.load` is deprecated",
                    category=DeprecationWarning,
                )
                module = torch.jit.load(str(path), map_location="cpu")
            module.eval()
    except Exception as exc:
        raise not_a_model(path, flavor="torch", exc=exc) from exc
    return TorchModel(module, torch=torch, mode=mode, width=width)


def _program_width(program: Any) -> int | None:
    """The static column count of an exported program's single 2-D input, if it has one."""
    try:
        names = set(program.graph_signature.user_inputs)
        shapes = [
            node.meta["val"].shape
            for node in program.graph.nodes
            if node.op == "placeholder" and node.name in names
        ]
    except Exception:  # the spec layout differs across torch versions: no width, no check
        return None
    if len(shapes) != 1 or len(shapes[0]) != 2:
        return None
    width = shapes[0][1]
    return width if isinstance(width, int) else None
