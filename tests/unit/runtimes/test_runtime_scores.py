"""How raw network outputs become predictions, and how files are recognised."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from headrace.runtimes._common import binary_output, scores_output, sigmoid, sniff


def test_rows_that_are_probabilities_are_kept() -> None:
    out = scores_output(np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32), mode="auto")

    np.testing.assert_allclose(out.probabilities, [[0.2, 0.8], [0.9, 0.1]], rtol=1e-6)
    np.testing.assert_array_equal(out.predictions, [1, 0])


def test_values_mode_keeps_a_multi_target_regression() -> None:
    out = scores_output(np.array([[1.5, -2.0], [3.0, 4.0]]), mode="values")

    np.testing.assert_array_equal(out.predictions, [[1.5, -2.0], [3.0, 4.0]])
    assert out.probabilities is None


def test_single_logit_column_goes_through_a_sigmoid() -> None:
    out = scores_output(np.array([[2.0], [-1.0]]), mode="logits")

    np.testing.assert_allclose(out.probabilities[:, 1], 1 / (1 + np.exp([-2.0, 1.0])))
    np.testing.assert_array_equal(out.predictions, [1, 0])


def test_three_dimensional_output_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(n,\) or \(n, k\), got \(2, 2, 2\)"):
        scores_output(np.zeros((2, 2, 2)), mode="auto")


def test_ties_follow_the_library() -> None:
    half = np.array([0.5])

    assert binary_output(half).predictions[0] == 1
    assert binary_output(half, tie_is_positive=False).predictions[0] == 0


def test_sigmoid_of_huge_margins_does_not_overflow() -> None:
    # pytest turns numpy's overflow RuntimeWarning into an error here.
    np.testing.assert_allclose(sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])


@pytest.mark.parametrize(
    ("content", "description"),
    [
        (b"", "an empty file"),
        (gzip.compress(b"x" * 10), "gzip-compressed data (a compressed joblib file?)"),
        ("naïve notes".encode(), "text starting with 'naïve notes'"),
        (b"\x00\x01\x02\x03", "binary data starting with bytes 00 01 02 03"),
        (b"tree\nversion=v4\n", "a LightGBM text model"),
    ],
)
def test_sniff_names_what_a_file_is(content: bytes, description: str, tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)

    assert sniff(path).description == description
