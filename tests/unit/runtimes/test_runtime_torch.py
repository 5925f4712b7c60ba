"""The torch flavor runs TorchScript files and torch.export programs like the trained net.

Small nets are trained for a few steps on the seeded data, saved the ways a user would,
loaded through `load_model`, and compared with the net's own float32 outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from headrace.errors import ModelLoadError
from headrace.runtimes import load_model

# torch 2.13 deprecates TorchScript (script/trace/save) in favour of torch.export; users
# still hand us such files, so the tests must make them.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)


def trained(
    head: nn.Module | None, outputs: int, loss: Callable[[Any, Any], Any], x: Any, y: Any
) -> nn.Module:
    """A 20-16-`outputs` MLP (plus `head`) after 60 full-batch Adam steps."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, outputs)]
    body = nn.Sequential(*layers)
    optimizer = torch.optim.Adam(body.parameters(), lr=0.05)
    inputs, target = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    for _ in range(60):
        optimizer.zero_grad()
        loss(body(inputs), target).backward()
        optimizer.step()
    net = nn.Sequential(body, head) if head is not None else body
    return net.eval()


def raw_outputs(net: nn.Module, x: Any) -> Any:
    with torch.no_grad():
        return net(torch.from_numpy(x.astype(np.float32)))


@pytest.fixture(scope="module")
def logits_net(binary_data: Any) -> nn.Module:
    x, y = binary_data
    return trained(None, 2, nn.CrossEntropyLoss(), x, y.astype(np.int64))


@pytest.mark.parametrize("export", ["script", "trace"])
def test_two_logits_become_softmax_probabilities(
    logits_net: nn.Module, binary_data: Any, model_dir: Path, export: str
) -> None:
    x, _ = binary_data
    if export == "script":
        module = torch.jit.script(logits_net)
    else:
        module = torch.jit.trace(logits_net, torch.zeros(4, 20))
    module.save(str(model_dir / "model.pt"))

    loaded = load_model(
        "torch", model_dir=model_dir, entry="model.pt", options={"output": "logits"}
    )
    out = loaded.predict(x)

    raw = raw_outputs(logits_net, x)
    assert loaded.flavor == "torch"
    assert out.probabilities is not None
    assert out.probabilities.dtype == np.float64
    np.testing.assert_allclose(out.probabilities, torch.softmax(raw, dim=1).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(out.predictions, raw.argmax(dim=1).numpy())
    np.testing.assert_array_equal(out.classes, [0, 1])


def test_logits_are_detected_without_the_option(
    logits_net: nn.Module, binary_data: Any, model_dir: Path
) -> None:
    x, _ = binary_data
    torch.jit.script(logits_net).save(str(model_dir / "model.pt"))

    out = load_model("torch", model_dir=model_dir, entry="model.pt").predict(x)

    raw = raw_outputs(logits_net, x)
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, torch.softmax(raw, dim=1).numpy(), rtol=1e-5)


def test_multiclass_softmax_head_is_taken_as_probabilities(
    multiclass_data: Any, model_dir: Path
) -> None:
    x, y = multiclass_data
    net = trained(nn.Softmax(dim=1), 3, nn.CrossEntropyLoss(), x, y.astype(np.int64))
    torch.jit.trace(net, torch.zeros(4, 20)).save(str(model_dir / "model.torchscript"))

    out = load_model("torch", model_dir=model_dir, entry="model.torchscript").predict(x)

    expected = raw_outputs(net, x).numpy()
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, expected, rtol=1e-5)
    np.testing.assert_array_equal(out.predictions, expected.argmax(axis=1))
    np.testing.assert_array_equal(out.classes, [0, 1, 2])


def test_sigmoid_output_is_the_positive_class_probability(
    binary_data: Any, model_dir: Path
) -> None:
    x, y = binary_data
    bce = nn.BCEWithLogitsLoss()
    net = trained(nn.Sigmoid(), 1, lambda out, t: bce(out.squeeze(1), t), x, y.astype(np.float32))
    torch.jit.script(net).save(str(model_dir / "model.pth"))

    out = load_model(
        "torch", model_dir=model_dir, entry="model.pth", options={"output": "probability"}
    ).predict(x)

    p = raw_outputs(net, x).numpy().reshape(-1)
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities[:, 1], p, rtol=1e-5)
    np.testing.assert_allclose(out.probabilities[:, 0], 1 - p, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.predictions, (p >= 0.5).astype(np.int64))
    np.testing.assert_array_equal(out.classes, [0, 1])


def test_regression_output_is_values(regression_data: Any, model_dir: Path) -> None:
    x, y = regression_data
    scale = float(np.abs(y).max())
    mse = nn.MSELoss()
    net = trained(None, 1, lambda out, t: mse(out.squeeze(1), t), x, (y / scale).astype(np.float32))
    torch.jit.script(net).save(str(model_dir / "model.pt"))

    out = load_model("torch", model_dir=model_dir, entry="model.pt").predict(x)

    assert out.predictions.shape == (300,)
    assert out.probabilities is None
    np.testing.assert_allclose(out.predictions, raw_outputs(net, x).numpy().reshape(-1), rtol=1e-5)


def test_torch_export_program(logits_net: nn.Module, binary_data: Any, model_dir: Path) -> None:
    x, _ = binary_data
    batch = torch.export.Dim("batch")
    program = torch.export.export(logits_net, (torch.zeros(8, 20),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(model_dir / "model.pt2"))

    out = load_model("torch", model_dir=model_dir, entry="model.pt2").predict(x)

    raw = raw_outputs(logits_net, x)
    assert out.probabilities is not None
    np.testing.assert_allclose(out.probabilities, torch.softmax(raw, dim=1).numpy(), rtol=1e-5)


def test_state_dict_checkpoint_says_how_to_export(logits_net: nn.Module, model_dir: Path) -> None:
    torch.save(logits_net.state_dict(), model_dir / "model.pt")

    with pytest.raises(ModelLoadError) as info:
        load_model("torch", model_dir=model_dir, entry="model.pt")

    message = str(info.value)
    assert "a torch.save() checkpoint" in message
    assert "torch.jit.script(model).save('model.pt')" in message


def test_random_bytes_are_not_a_torch_model(model_dir: Path, data_seed: int) -> None:
    rng = np.random.default_rng(data_seed)
    (model_dir / "model.pt").write_bytes(b"\x93\x01" + rng.bytes(1000))

    with pytest.raises(ModelLoadError) as info:
        load_model("torch", model_dir=model_dir, entry="model.pt")

    message = str(info.value)
    assert "with the torch flavor: it looks like binary data starting with bytes 93 01" in message
    assert "PytorchStreamReader" not in message


def test_unknown_output_option_lists_the_choices(logits_net: nn.Module, model_dir: Path) -> None:
    torch.jit.script(logits_net).save(str(model_dir / "model.pt"))

    with pytest.raises(ModelLoadError, match=r"output='proba' .* auto, values, probability"):
        load_model("torch", model_dir=model_dir, entry="model.pt", options={"output": "proba"})
