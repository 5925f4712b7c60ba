"""Loading YAML config files safely, and ``${VAR}`` / ``${VAR:-default}`` in them.

Pipeline specs, server configs and release schemas are read by `load_yaml`, which
bounds what a hostile or broken file can cost before any Python object is built: the
text size, the nesting depth, and the size of the document with every alias expanded
(a "billion laughs" file of a few hundred bytes otherwise expands to gigabytes, and a
recursive alias ``a: &a [*a]`` never ends). Every failure is one line naming the file.

``${VAR}`` expansion (`expand_env`) remembers the values of variables whose names say
they are secret (``*TOKEN*``, ``*PASSWORD*``, ...), so no message or log line shows them.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from headrace._redact import note_secret, show_value
from headrace.errors import HeadraceError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "expand_env", "load_yaml"]

MAX_YAML_BYTES = 1 << 20
"""A config file larger than 1 MiB is refused (real ones are a few KiB)."""

MAX_YAML_NODES = 100_000
"""Values in a document once every alias is expanded (a billion-laughs guard)."""

MAX_YAML_DEPTH = 64
"""Nesting of mappings and sequences (Python's recursion limit stays far away)."""

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_NAME = re.compile(r"(?i)token|passw|secret|credential|api_?key|private|_key$")


def load_yaml(
    text: str | bytes, *, where: str, error: type[HeadraceError], invalid: str | None = None
) -> Any:
    """The decoded document of YAML `text` (None when empty), within the limits above.

    Parameters
    ----------
    where
        The file named in errors.
    error
        The error type to raise.
    invalid
        What a syntax error's message starts with (default ``"{where}: invalid YAML"``).

    Raises
    ------
    HeadraceError
        Of type `error`, one line: invalid YAML (with line and column), too large, too
        deep, a recursive alias or too many values after alias expansion.
    """
    invalid = invalid or f"{where}: invalid YAML"
    if len(text) > MAX_YAML_BYTES:
        raise error(
            f"{where}: {len(text):,} bytes is larger than a config file may be "
            f"({MAX_YAML_BYTES:,}): split it or check it is the right file"
        )
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node, where=where, error=error)
            try:
                return loader.construct_document(node)
            except yaml.YAMLError:
                raise
            except Exception as exc:
                # PyYAML's constructors raise what they meet on a malformed tagged or
                # resolved scalar (ValueError for 2026-02-30, AttributeError for
                # `!!timestamp x`): a value that cannot be read, never a crash.
                raise error(
                    f"{where}: a value cannot be read ({type(exc).__name__}: "
                    f"{_one_line(str(exc))[:80]}) at line {node.start_mark.line + 1}: "
                    "quote it if it is a string"
                ) from None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise error(
            f"{invalid}{at}: {_one_line(problem)}: fix the syntax "
            "(check the indentation and quoting)"
        ) from None
    except yaml.YAMLError as exc:
        raise error(f"{invalid}: {_one_line(str(exc))}: fix the syntax") from None
    except RecursionError:
        raise error(
            f"{where}: nesting is too deep to read (at most {MAX_YAML_DEPTH} levels)"
        ) from None


def _check_size(root: Node, *, where: str, error: type[HeadraceError]) -> None:
    """Refuse recursive aliases, deep nesting and documents too large once expanded.

    Counted on the composed node graph, where an alias is a shared node: sizes are
    memoised per node, so the count itself costs one visit per distinct node.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise error(
                f"{where}: a recursive alias (an anchor used inside itself, like "
                "`a: &a [*a]`) at line "
                f"{node.start_mark.line + 1}: write the value out instead"
            )
        if depth > MAX_YAML_DEPTH:
            raise error(
                f"{where}: nesting deeper than {MAX_YAML_DEPTH} levels at line "
                f"{node.start_mark.line + 1}: flatten it"
            )
        total = 1
        if isinstance(node, SequenceNode | MappingNode):
            open_nodes.add(key)
            children: list[Node] = (
                list(node.value)
                if isinstance(node, SequenceNode)
                else [part for pair in node.value for part in pair]
            )
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_YAML_NODES:
                    raise error(
                        f"{where}: more than {MAX_YAML_NODES:,} values once its aliases are "
                        f"expanded (line {node.start_mark.line + 1}): an alias bomb, or "
                        "a file that is not a config"
                    )
            open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def expand_env(value: Any, *, where: str, error: type[HeadraceError], key: str = "$") -> Any:
    """`value` (a decoded YAML document) with every ``${VAR}`` in its strings replaced.

    Parameters
    ----------
    where
        The file (or "pipeline spec") named in errors.
    error
        The error to raise for an unset variable without a default.
    key
        The JSON path of `value` in its document, named in errors.

    Raises
    ------
    HeadraceError
        Of type `error`, naming the variable and the key; or a recursive value (a
        document built in Python that contains itself).
    """
    return _expand(value, where=where, error=error, key=key, open_ids=set())


def _expand(
    value: Any, *, where: str, error: type[HeadraceError], key: str, open_ids: set[int]
) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                if _SECRET_NAME.search(name):
                    note_secret(found)
                return found
            if default is not None:
                return default
            raise error(
                f"{where}: environment variable '{name}' is not set - at `{key}`; set it or "
                f"write ${{{name}:-default}}"
            )

        return _VARIABLE.sub(substitute, value)
    if not isinstance(value, dict | list):
        return value
    if id(value) in open_ids:
        raise error(f"{where}: a value contains itself - at `{key}`: write it out instead")
    open_ids.add(id(value))
    try:
        if isinstance(value, dict):
            return {
                k: _expand(
                    v, where=where, error=error, key=f"{key}.{show_value(k)}", open_ids=open_ids
                )
                for k, v in value.items()
            }
        return [
            _expand(v, where=where, error=error, key=f"{key}[{i}]", open_ids=open_ids)
            for i, v in enumerate(value)
        ]
    finally:
        open_ids.discard(id(value))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
