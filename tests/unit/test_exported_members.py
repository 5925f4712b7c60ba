"""Every subpackage's `__all__` is sorted, real, complete and documented.

Users import from subpackages (``from headrace.registry import Registry``), so each
subpackage `__init__` re-exports what its modules list in their own `__all__`, and every
class and function it exports has a docstring (after httpx's ``test_exported_members.py``).
Packages and top modules are found with `pkgutil`, so a new one is checked without
anyone remembering to list it here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from types import ModuleType
from typing import Any

import pytest

import headrace
from headrace.runtimes import FLAVORS

# Modules whose `__all__` their package deliberately does not re-export. A module listed
# here (or under a package listed here) is skipped by the completeness check only.
UNEXPORTED_MODULES = frozenset(
    {
        # the CLI's surface is the command line: `headrace.cli` exports `app` and `main`,
        # its modules' `__all__` list the Typer commands registered on `app`
        "headrace.cli",
        # the SQL layout is `Registry`'s own, reached into only by migrations and tests
        "headrace.registry.tables",
        # `load_model` imports a flavor's module only when a model of that flavor loads,
        # and each names its hook `load`
        *(f"headrace.runtimes.{flavor}" for flavor in FLAVORS),
        # connectors over optional clients (confluent-kafka, redis, nats-py): importing
        # `headrace.streams` must not import them; `open_source`/`open_sink` load them
        "headrace.streams.kafka",
        "headrace.streams.redis",
        "headrace.streams.nats",
        # the gRPC transport over optional grpcio/protobuf: importing `headrace.serving`
        # must not import them; `build_app` loads it when a grpc_port is configured
        "headrace.serving.grpc_codec",
        "headrace.serving.grpc_server",
    }
)
# Subpackages whose parent re-exports only the names other parts use, not their whole
# `__all__` (their own `__all__` is still checked complete over their modules).
NARROWED_SUBPACKAGES = frozenset(
    {
        # `headrace.monitoring` exports the drift reference, check, monitor and files;
        # detector internals (KS, distances, corrections, MMD) stay in `monitoring.drift`
        "headrace.monitoring.drift",
    }
)
# Single names a module lists for sibling packages that its package does not export.
UNEXPORTED_NAMES = frozenset(
    {
        # the SQLAlchemy MetaData that `headrace.registry.tables` adds its tables to
        ("headrace.audit.chain", "metadata"),
    }
)


def _discover() -> tuple[list[str], list[str]]:
    """Every subpackage (at any depth) and every top-level module of headrace."""
    packages: list[str] = []
    modules: list[str] = []
    for info in pkgutil.walk_packages(headrace.__path__, prefix="headrace."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue  # private (and importing `__main__` would run the CLI)
        if info.ispkg:
            packages.append(info.name)
        elif info.name.count(".") == 1:
            modules.append(info.name)
    return packages, modules


PACKAGES, TOP_MODULES = _discover()


def _all_of(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module.__name__} has no __all__"
    return list(names)


def _ruff_order(name: str) -> tuple[int, list[int | str]]:
    """Ruff's RUF022 (isort-style) key: CONSTANTS, then Classes, then the rest, each in
    natural order (``a2`` before ``a10``)."""
    kind = 0 if len(name) > 1 and name.isupper() else 1 if name[0].isupper() else 2
    parts = re.split(r"(\d+)", name)
    return kind, [int(part) if part.isdigit() else part for part in parts]


def _own_docstring(obj: Any) -> str:
    """`obj`'s docstring, not the signature a dataclass or NamedTuple writes in its place."""
    doc = obj.__doc__ or ""
    generated = f"{obj.__name__}("
    if inspect.isclass(obj) and doc.startswith(generated) and "\n" not in doc.strip():
        if dataclasses.is_dataclass(obj) or issubclass(obj, tuple):
            return ""
    return doc.strip()


def _is_unexported(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in UNEXPORTED_MODULES for i in range(2, len(parts) + 1))


def test_discovery_finds_the_parts() -> None:
    expected = {
        "audit",
        "cli",
        "demo",
        "inference",
        "pipeline",
        "registry",
        "release",
        "runtimes",
        "streams",
    }
    assert {f"headrace.{name}" for name in expected} <= set(PACKAGES)
    assert {"headrace.errors", "headrace.settings", "headrace.types"} <= set(TOP_MODULES)


@pytest.mark.parametrize("name", PACKAGES + TOP_MODULES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = _all_of(module)
    assert exported == sorted(exported, key=_ruff_order), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_reexports_its_modules(name: str) -> None:
    package = importlib.import_module(name)
    exported = set(_all_of(package))
    unlisted: list[str] = []
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{name}."):
        if info.name.rpartition(".")[2].startswith("_") or _is_unexported(info.name):
            continue
        if info.name in NARROWED_SUBPACKAGES:
            continue
        module = importlib.import_module(info.name)
        unlisted += [
            f"{info.name}.{member}"
            for member in getattr(module, "__all__", ())
            if member not in exported and (info.name, member) not in UNEXPORTED_NAMES
        ]
    assert not unlisted, f"{name}.__all__ does not re-export {unlisted}"


@pytest.mark.parametrize("name", PACKAGES + TOP_MODULES)
def test_exported_classes_and_functions_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__ and module.__doc__.strip(), f"{name} opens with no docstring"
    undocumented = [
        member
        for member in _all_of(module)
        if (inspect.isclass(obj := getattr(module, member)) or inspect.isroutine(obj))
        and not _own_docstring(obj)
    ]
    assert not undocumented, f"{name} exports undocumented names: {undocumented}"


def test_ruff_order_matches_ruf022() -> None:
    names = ["a10", "aB", "X", "A_B", "Ab", "_x", "FLAVORS", "a9", "AB1", "ab", "__version__"]
    assert sorted(names, key=_ruff_order) == [
        "AB1",
        "A_B",
        "FLAVORS",
        "Ab",
        "X",
        "__version__",
        "_x",
        "a9",
        "a10",
        "aB",
        "ab",
    ]
