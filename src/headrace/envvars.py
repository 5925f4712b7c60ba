"""``${VAR}`` and ``${VAR:-default}`` in YAML specs, replaced from the environment.

Pipeline specs and server configs both take secrets and endpoints from the environment
this way, so both expand them here, with one error message naming the file and the key.
"""

from __future__ import annotations

import os
import re
from typing import Any

from headrace.errors import HeadraceError

__all__ = ["expand_env"]

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
        Of type `error`, naming the variable and the key.
    """
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            raise error(
                f"{where}: environment variable '{name}' is not set - at `{key}`; set it or "
                f"write ${{{name}:-default}}"
            )

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, where=where, error=error, key=f"{key}.{k}") for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            expand_env(v, where=where, error=error, key=f"{key}[{i}]") for i, v in enumerate(value)
        ]
    return value
