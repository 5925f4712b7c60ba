"""The first model loaded in a process is charged for its own memory, not its library's.

The pool measures a load by the growth of the resident set; importing scikit-learn grows
it by over 100 MB, so before the repository imported a release's libraries ahead of the
measured load (`headrace.runtimes.import_runtime`), the first 5 MB forest measured 150 MB
and a tight budget refused it. Checked in a fresh interpreter, where nothing is imported
yet: two forests of known, different sizes, loaded one after the other, each measured
within `TOLERANCE_BYTES` of its size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.ensemble import RandomForestClassifier

from headrace.registry import Registry
from support.models import draft_from, synthetic, write_sklearn_release

# What else a first load may add besides the model: allocator arenas and the heap the
# warm-up batch leaves behind. Importing scikit-learn alone adds over 100 MB.
TOLERANCE_BYTES = 8_000_000

CHILD = """
import asyncio, json, sys
from pathlib import Path
from headrace.registry import Registry
from headrace.serving.repository import ModelRepository

assert "sklearn" not in sys.modules, "the child must start with nothing imported"
url, artifacts, cache, order = sys.argv[1:5]


async def main() -> None:
    with Registry(url, artifacts=artifacts, actor="test", cache_dir=Path(cache)) as registry:
        repository = ModelRepository(registry)
        for name in order.split(","):
            await repository.get(name)
        print(json.dumps({e.key[0]: e.footprint_bytes for e in repository.pool.entries()}))


asyncio.run(main())
"""


def _forest_bytes(forest: RandomForestClassifier) -> int:
    """What a fitted forest holds: its trees' node and value arrays."""
    total = 0
    for tree in forest.estimators_:
        state = tree.tree_.__getstate__()
        total += state["nodes"].nbytes + state["values"].nbytes
    return total


@pytest.fixture(scope="module")
def forests(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("first-load")
    x, y = synthetic(24_000, seed=11)
    known: dict[str, int] = {}
    with Registry(
        f"sqlite:///{root / 'registry.db'}",
        artifacts=f"file://{root / 'artifacts'}",
        actor="test",
        cache_dir=root / "cache",
    ) as registry:
        for name, trees in (("large", 48), ("small", 12)):
            files = write_sklearn_release(root / name)
            forest = RandomForestClassifier(n_estimators=trees, random_state=0).fit(x, y)
            joblib.dump(forest, files.model)
            known[name] = _forest_bytes(forest)
            registry.register(draft_from(files, root / name, name), alias="champion")
    return root, known


def _footprints(root: Path, order: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            f"sqlite:///{root / 'registry.db'}",
            f"file://{root / 'artifacts'}",
            str(root / "cache"),
            ",".join(order),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    footprints: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return footprints


@pytest.mark.parametrize("order", [["large", "small"], ["small", "large"]])
def test_each_load_is_charged_its_own_size(
    forests: tuple[Path, dict[str, int]], order: list[str]
) -> None:
    root, known = forests
    assert known["large"] > 3 * known["small"] > 6_000_000  # sizes the tolerance can tell
    measured = _footprints(root, order)
    print(f"known {known}, measured {measured} (loaded {order})")
    first = order[0]
    assert measured[first] <= known[first] + TOLERANCE_BYTES, (
        f"the first load ({first}) was charged {measured[first] / 1e6:.1f} MB for a "
        f"{known[first] / 1e6:.1f} MB model"
    )
    assert measured[first] >= 0.8 * known[first], f"{first} measured below its size"
    # A later load may reuse heap an earlier one freed, and so measure low (the pool keeps
    # the largest footprint it saw per model); it still sees a model, and the larger one.
    assert measured[order[1]] > 0
    assert measured["large"] > measured["small"]
