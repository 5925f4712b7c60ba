"""``headrace drift check`` end to end: files, a release, every error, the HTML report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from support.cli import Run, make_runner
from support.models import synthetic, write_sklearn_release

CHROMIUM_INSTALL = "apt-get install -y chromium"


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """`headrace ...` in a subprocess with its own home; `ok` asserts exit 0."""
    return make_runner(tmp_path / "home", tmp_path)


def _table(rng: np.random.Generator, rows: int, *, drift: bool) -> pa.Table:
    merchants = ["grocery", "fuel", "travel", "online"]
    shares = [0.2, 0.3, 0.1, 0.4] if drift else [0.4, 0.3, 0.1, 0.2]
    return pa.table(
        {
            "amount": rng.lognormal(3.4 if drift else 3.0, 1.0, rows),
            "hour": rng.integers(0, 24, rows),
            "distance_km": rng.exponential(5.0, rows),
            "merchant": rng.choice(merchants, rows, p=shares),
            "card_present": rng.random(rows) < 0.7,
        }
    )


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    """A fixed draw: verdicts at alpha 0.05 are asserted, so no seed may flip them."""
    rng = np.random.default_rng(5)
    paths = {
        "reference": tmp_path / "reference.parquet",
        "same": tmp_path / "same.csv",
        "drifted": tmp_path / "drifted.parquet",
    }
    pq.write_table(_table(rng, 10_000, drift=False), paths["reference"])
    pacsv.write_csv(_table(rng, 1_000, drift=False), paths["same"])
    pq.write_table(_table(rng, 1_000, drift=True), paths["drifted"])
    return paths


def test_table_json_and_exit_zero_either_way(run: Run, data: dict[str, Path]) -> None:
    out = run(
        "drift", "check", "--reference", str(data["reference"]), "--current", str(data["drifted"])
    )
    assert "2 of 5 columns drifted (bonferroni, alpha 0.05): amount, merchant" in out.stdout
    for column in ("amount", "hour", "distance_km", "merchant", "card_present"):
        assert column in out.stdout
    same = run("drift", "check", "-r", str(data["reference"]), "-c", str(data["same"]), "--json")
    result = json.loads(same.stdout)
    assert result["drifted_columns"] == [] and result["report"] is None
    assert {c["column"]: c["test"] for c in result["columns"]} == {
        "amount": "ks",
        "hour": "ks",
        "distance_km": "ks",
        "card_present": "chi2",  # a boolean: its two counts, not KS on two values
        "merchant": "chi2",
    }
    assert result["multivariate"]["permutations"] == 200
    bh = json.loads(
        run(
            "drift", "check", "-r", str(data["reference"]), "-c", str(data["drifted"]),
            "--json", "--correction", "bh", "--method", "asymp", "--no-multivariate",
        ).stdout
    )  # fmt: skip
    assert bh["correction"] == "bh" and bh["multivariate"] is None
    assert set(bh["drifted_columns"]) >= {"amount", "merchant"}


def test_reference_can_be_a_release(run: Run, tmp_path: Path) -> None:
    files = write_sklearn_release(tmp_path / "model", rows=2_000)
    run(
        "register", str(files.model), "--name", "fraud", "--schema", str(files.schema),
        "--data", str(files.data), "--alias", "champion",
    )  # fmt: skip
    x, _ = synthetic(800, seed=11, shift=0.4)
    current = tmp_path / "live.parquet"
    pq.write_table(pa.table({f"f{i}": x[:, i] for i in range(5)}), current)
    result = json.loads(
        run("drift", "check", "--reference", "fraud:1", "--current", str(current), "--json").stdout
    )
    assert result["reference"] == "release fraud:1"
    assert set(result["drifted_columns"]) == {f"f{i}" for i in range(5)}
    champion = json.loads(
        run("drift", "check", "-r", "fraud@champion", "-c", str(current), "--json").stdout
    )
    assert champion["drifted_columns"] == result["drifted_columns"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "error: The current file '{cur}' does not exist. Check --current."),
        ("unreadable", "error: Cannot read the current file '{cur}': "),
        ("extension", "error: The current file '{cur}' has an unsupported extension '.txt'"),
        ("empty", "error: The current file '{cur}' has no rows"),
        ("no_common", "error: No common columns: the window has ['other']"),
        ("type", "error: Column 'amount' is numeric in the reference (reference.parquet) but "),
        ("release", "error: No registry at 'sqlite:///"),
        ("correction", "error: Unknown --correction 'holm': use bonferroni, bh or none."),
    ],
)
def test_errors_are_one_line_and_exit_one(
    run: Run, data: dict[str, Path], tmp_path: Path, case: str, expected: str
) -> None:
    cur = tmp_path / {"unreadable": "bad.parquet", "extension": "x.txt"}.get(case, "cur.csv")
    reference = "reference.parquet"
    extra: list[str] = []
    if case == "unreadable":
        cur.write_bytes(b"PAR1 this is not parquet")
    elif case == "extension":
        cur.write_text("amount\n1\n")
    elif case == "empty":
        cur.write_text("amount,hour\n")
    elif case == "no_common":
        cur.write_text("other\n1\n2\n")
    elif case == "type":
        cur.write_text("amount\nlots\nmore\n")
    elif case in ("release", "correction"):
        cur = data["same"]
        reference = "nosuch" if case == "release" else reference
        extra = ["--correction", "holm"] if case == "correction" else []
    result = run("drift", "check", "-r", reference, "-c", str(cur), *extra, ok=False)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected.format(cur=cur)), lines[0]
    assert result.stdout == ""


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        message = f"Chromium not found: install it with {CHROMIUM_INSTALL}"
        if os.environ.get("HEADRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} (HEADRACE_REQUIRE_SERVICES=1 turns skips into failures)")
        pytest.skip(message)
    return binary


def test_html_report_renders_in_headless_chromium(
    run: Run, data: dict[str, Path], tmp_path: Path
) -> None:
    chromium = _chromium()
    report = tmp_path / "out" / "drift.html"
    out = run(
        "drift", "check", "-r", str(data["reference"]), "-c", str(data["drifted"]),
        "--report", str(report),
    )  # fmt: skip
    assert f"report: {report}" in out.stdout
    page = report.read_text()
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # One plot per column plus the evidence chart, each with drawn marks in both colours.
    assert dom.count("<svg") == 6, dom[:2000]
    assert dom.count('class="ref"') >= 5 and dom.count('class="cur"') >= 5
    assert "Drift in 2 of 5 columns" in dom
    shot = tmp_path / "drift.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1300,1600", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_html_report_reads_without_a_key(run: Run, data: dict[str, Path], tmp_path: Path) -> None:
    """Skewed amounts on a log axis, the boolean as false/true bars, p-values one way."""
    report = tmp_path / "drift.html"
    out = run(
        "drift", "check", "-r", str(data["reference"]), "-c", str(data["drifted"]),
        "--report", str(report),
    ).stdout  # fmt: skip
    page = report.read_text()
    assert "amount: reference vs current distribution (log axis)" in page
    assert "card_present: category shares" in page and ">true</text>" in page
    assert "p=" not in page and "p = 0.000" not in page
    assert "1.0000" not in out  # the table's p-values in the report's format too
