"""The input schema: which fields an event has, their types and the values they may take.

A schema is written by hand (YAML or JSON) or inferred from training data with
`schema_from_arrow`. The inference core validates every batch against it; the release
manifest stores it with `schema_to_builtins`.

This module also holds the small document reader shared by the schema, the release config
and the feature spec (`_read_document`, `_convert`): one place that turns a malformed file
into one line saying what is wrong, where (file and ``$.path``) and how to fix it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import msgspec
import orjson

from headrace._env import load_yaml
from headrace._redact import show_value
from headrace.errors import SchemaError

__all__ = [
    "FIELD_TYPES",
    "Field",
    "FieldType",
    "Schema",
    "load_schema",
    "schema_from_arrow",
    "schema_from_builtins",
    "schema_to_builtins",
]

FieldType = Literal["float", "int", "bool", "string", "category", "timestamp"]
"""The value types a field can declare."""

FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
"""Every `FieldType`, in documentation order."""

_NUMERIC_TYPES = frozenset({"float", "int", "timestamp"})

T = TypeVar("T")


class _SpecError(SchemaError, ValueError):
    """A value that decodes but makes no sense; raised from ``__post_init__``.

    It derives from `ValueError` so that msgspec, while converting a document, wraps it in
    a `msgspec.ValidationError` carrying the path of the offending object; `at` is the
    rest of the path below that object (``.min``, ``[3].name``).
    """

    def __init__(self, what: str, fix: str, *, at: str = "") -> None:
        self.what = what
        self.fix = fix
        self.at = at
        super().__init__(f"{what}: {fix}")


class Field(
    msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, omit_defaults=True
):
    """One field of an event.

    Parameters
    ----------
    name
        The key in a JSON event, the column in a CSV or Parquet file.
    type
        One of ``float``, ``int``, ``bool``, ``string``, ``category``, ``timestamp``
        (ISO 8601 text or epoch seconds; the model sees epoch seconds).
    required
        A missing field rejects the event. When False, a missing field takes `default`,
        or null when there is none (which then needs ``nullable: true``).
    nullable
        Whether an explicit null is accepted (the model sees NaN).
    min, max
        Inclusive bounds for ``float``, ``int`` and ``timestamp`` (epoch seconds) fields.
    values
        The allowed values of a ``category`` field, in the order that defines their codes
        (the model sees a category as its index in this list). Required for categories.
    pii
        The value is personal data: it never appears in a rejection reason or a log line.
    allow_nan
        Accept NaN and infinities in a ``float`` field (forbidden by default).
    max_length
        The longest accepted ``string`` value, in characters.
    default
        The value a missing non-required field takes.
    description
        Free text for people reading the schema.
    """

    name: str
    type: FieldType
    required: bool = True
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    values: list[str] | None = None
    pii: bool = False
    allow_nan: bool = False
    max_length: int | None = None
    default: Any = None
    description: str | None = None

    def __post_init__(self) -> None:
        problem = _field_problem(self)
        if problem is not None:
            what, fix, at = problem
            raise _SpecError(f"field '{self.name}' {what}", fix, at=at)


def _field_problem(f: Field) -> tuple[str, str, str] | None:
    """Return ``(what, fix, at)`` for the first thing wrong with `f`, or None."""
    if not f.name:
        return "has an empty name", "give every field a non-empty name", ".name"
    if f.type == "category" and not f.values:
        return (
            "has type category but no values",
            "list the allowed values under `values:`",
            ".values",
        )
    if f.type != "category" and f.values is not None:
        return (
            f"has values but type '{f.type}'",
            "remove `values` or set `type: category`",
            ".values",
        )
    if f.values is not None and len(set(f.values)) != len(f.values):
        dup = next(v for i, v in enumerate(f.values) if v in f.values[:i])
        return f"lists value {dup!r} twice", "list every category value once", ".values"
    for key in ("min", "max"):
        bound = getattr(f, key)
        if bound is None:
            continue
        if f.type not in _NUMERIC_TYPES:
            return (
                f"has {key} but type '{f.type}'",
                f"remove `{key}`: bounds apply to float, int and timestamp fields",
                f".{key}",
            )
        if math.isnan(bound):
            return f"has {key} NaN", f"set {key} to a number or remove it", f".{key}"
    if f.min is not None and f.max is not None and f.min > f.max:
        return (
            f"has min {f.min!r} greater than max {f.max!r}",
            "swap them or fix the bound",
            ".min",
        )
    if f.allow_nan and f.type != "float":
        return (
            f"has allow_nan but type '{f.type}'",
            "remove `allow_nan`: only float fields can hold NaN",
            ".allow_nan",
        )
    if f.max_length is not None:
        if f.type != "string":
            return (
                f"has max_length but type '{f.type}'",
                "remove `max_length`: it applies to string fields",
                ".max_length",
            )
        if f.max_length < 1:
            return (
                f"has max_length {f.max_length}",
                "set max_length to 1 or more, or remove it",
                ".max_length",
            )
    if f.default is not None:
        if f.required:
            return (
                "has a default but is required",
                "set `required: false` so the default is used, or remove `default`",
                ".default",
            )
        why = _default_problem(f)
        if why is not None:
            return f"has default {f.default!r}, {why}", "fix or remove `default`", ".default"
    elif not f.required and not f.nullable:
        return (
            "is optional but has no default and is not nullable",
            "add `default: <value>` or `nullable: true`",
            "",
        )
    return None


def _default_problem(f: Field) -> str | None:
    """Say why `f.default` is not a valid value of `f`, or return None."""
    d = f.default
    is_number = isinstance(d, int | float) and not isinstance(d, bool)
    if f.type == "float" and not is_number:
        return "which is not a number"
    if f.type == "int" and not (isinstance(d, int) and not isinstance(d, bool)):
        return "which is not an integer"
    if f.type == "bool" and not isinstance(d, bool):
        return "which is not true or false"
    if f.type in ("string", "category") and not isinstance(d, str):
        return "which is not text (quote it)"
    if f.type == "category" and f.values is not None and d not in f.values:
        return f"which is not one of {f.values!r}"
    if f.type == "timestamp":
        if isinstance(d, str):
            try:
                dt.datetime.fromisoformat(d)
            except ValueError:
                return "which is not an ISO 8601 timestamp"
        elif not (is_number or isinstance(d, dt.date)):
            return "which is not a timestamp (ISO 8601 text or epoch seconds)"
    if is_number and f.type in ("float", "int"):
        if f.min is not None and d < f.min:
            return f"below min {f.min!r}"
        if f.max is not None and d > f.max:
            return f"above max {f.max!r}"
    return None


class Schema(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The fields of an event, in the order the model sees them by default.

    Parameters
    ----------
    fields
        At least one `Field`; names are unique.
    """

    fields: list[Field]

    def __post_init__(self) -> None:
        if not self.fields:
            raise _SpecError("schema has no fields", "add at least one field")
        seen: set[str] = set()
        for i, f in enumerate(self.fields):
            if f.name in seen:
                raise _SpecError(
                    f"duplicate field name '{f.name}'",
                    "field names must be unique; rename or remove one",
                    at=f"[{i}].name",
                )
            seen.add(f.name)

    @property
    def names(self) -> list[str]:
        """The field names in schema order."""
        return [f.name for f in self.fields]

    @property
    def pii_fields(self) -> list[str]:
        """The names of the fields marked ``pii: true``, in schema order."""
        return [f.name for f in self.fields if f.pii]

    def field(self, name: str) -> Field:
        """Return the field called `name`.

        Raises
        ------
        SchemaError
            When the schema has no such field.
        """
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(
            f"no field '{name}' in the schema: its fields are {', '.join(self.names)}"
        )


# -- reading documents ---------------------------------------------------------------


def _read_document(path: Path, *, what: str) -> Any:
    """Read a YAML or JSON file (JSON for ``.json``, else YAML, which also reads JSON).

    Raises
    ------
    SchemaError
        When the file is missing, unreadable, empty, or not valid YAML/JSON.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SchemaError(f"{what} file '{path}' not found: check the path") from None
    except IsADirectoryError:
        raise SchemaError(f"{what} file '{path}' is a directory: pass the file itself") from None
    except OSError as exc:
        raise SchemaError(
            f"{what} file '{path}' cannot be read ({exc.strerror}): check its permissions"
        ) from None
    if not raw.strip():
        raise SchemaError(f"{what} file '{path}' is empty: write the {what.lower()} in it")
    if path.suffix.lower() == ".json":
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SchemaError(
                f"invalid JSON in {path} at line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg}: fix the syntax"
            ) from None
    # Bounded: size, nesting and alias expansion (see headrace._env.load_yaml).
    return load_yaml(raw, where=str(path), error=SchemaError, invalid=f"invalid YAML in {path}")


_MSGSPEC_ERROR = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_KEY = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_MISSING_KEY = re.compile(r"^Object missing required field `(?P<key>[^`]*)`$")
_BAD_ENUM = re.compile(r"^Invalid enum value (?P<value>.*)$")
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")


def _convert(
    data: Any,
    type_: type[T],
    *,
    source: str,
    prefix: str = "$",
    keys: Sequence[str] = (),
    choices: dict[str, tuple[str, ...]] | None = None,
) -> T:
    """`msgspec.convert` `data` to `type_`, turning errors into one-line `SchemaError`.

    Parameters
    ----------
    data
        The decoded document (or part of it).
    type_
        The target type.
    source
        Where the data came from, for messages (a file path or ``manifest``).
    prefix
        The path of `data` inside the document (msgspec's paths start at ``$``).
    keys
        The keys the innermost Struct accepts, to suggest a fix for an unknown key.
    choices
        For a Literal-typed key (``type``, ``task``): its allowed values.
    """
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise _explain(exc, source=source, prefix=prefix, keys=keys, choices=choices) from None
    except _SpecError as exc:  # raised by a top-level __post_init__ outside msgspec
        raise _spec_message(exc, path=prefix, source=source) from None


def _spec_message(exc: _SpecError, *, path: str, source: str) -> SchemaError:
    return SchemaError(f"{exc.what} at {path}{exc.at} in {source}: {exc.fix}")


def _explain(
    exc: msgspec.ValidationError,
    *,
    source: str,
    prefix: str,
    keys: Sequence[str],
    choices: dict[str, tuple[str, ...]] | None,
) -> SchemaError:
    match = _MSGSPEC_ERROR.match(str(exc))
    msg = match.group("msg") if match else str(exc)
    raw_path = (match.group("path") if match else None) or "$"
    path = prefix + raw_path[1:]
    cause = exc.__cause__
    if isinstance(cause, _SpecError):
        return _spec_message(cause, path=path, source=source)
    if m := _UNKNOWN_KEY.match(msg):
        key = m.group("key")
        close = difflib.get_close_matches(key, keys, n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"the keys allowed are {', '.join(keys)}"
        return SchemaError(f"unknown key '{show_value(key)}' at {path} in {source}: {fix}")
    if m := _MISSING_KEY.match(msg):
        key = m.group("key")
        return SchemaError(f"missing key '{key}' at {path} in {source}: add it")
    if m := _BAD_ENUM.match(msg):
        key = raw_path.rsplit(".", 1)[-1]
        allowed = (choices or {}).get(key, ())
        fix = f"use one of {', '.join(allowed)}" if allowed else "use an allowed value"
        return SchemaError(f"unknown {key} {m.group('value')} at {path} in {source}: {fix}")
    if m := _EXPECTED.match(msg):
        want, got = m.group("want"), m.group("got")
        if "str" in want and got in ("bool", "int", "float"):
            fix = (
                "quote the value (YAML reads yes/no/on/off as booleans and bare numbers as numbers)"
            )
        else:
            fix = f"write a value of type `{want}`"
        return SchemaError(f"{msg} at {path} in {source}: {fix}")
    return SchemaError(f"{msg} at {path} in {source}: fix the value")


# -- loading, inferring and storing schemas ------------------------------------------

_FIELD_KEYS: tuple[str, ...] = Field.__struct_fields__


def _schema_from_data(data: Any, *, source: str) -> Schema:
    if isinstance(data, dict):
        extra = [k for k in data if k != "fields"]
        if extra:
            close = difflib.get_close_matches(str(extra[0]), ["fields"], n=1)
            fix = (
                "did you mean 'fields'?"
                if close
                else "a schema has only `fields:` (a list of fields), or is itself that list"
            )
            raise SchemaError(f"unknown key '{show_value(extra[0])}' at $ in {source}: {fix}")
        if "fields" not in data:
            raise SchemaError(f"missing key 'fields' at $ in {source}: add the list of fields")
        data, prefix = data["fields"], "$.fields"
    else:
        prefix = "$"
    if not isinstance(data, list):
        got = "null" if data is None else type(data).__name__
        raise SchemaError(
            f"expected a list of fields at {prefix} in {source}, got {got}: "
            "write the fields as a list (`- name: ...`)"
        )
    fields = _convert(
        data,
        list[Field],
        source=source,
        prefix=prefix,
        keys=_FIELD_KEYS,
        choices={"type": FIELD_TYPES},
    )
    try:
        return Schema(fields=fields)
    except _SpecError as exc:
        if not exc.at:
            raise SchemaError(f"{exc.what} in {source}: {exc.fix}") from None
        raise _spec_message(exc, path=prefix, source=source) from None


def load_schema(path: Path) -> Schema:
    """Read a schema file.

    The file is YAML (or JSON for ``.json``) holding either ``{fields: [...]}`` or the bare
    list of fields.

    Parameters
    ----------
    path
        The schema file.

    Returns
    -------
    Schema
        The checked schema.

    Raises
    ------
    SchemaError
        When the file is missing, unreadable, not YAML/JSON, or describes an invalid
        schema; the message names the file, the path inside it and the fix.
    """
    return _schema_from_data(_read_document(path, what="Schema"), source=str(path))


def schema_to_builtins(schema: Schema) -> dict[str, Any]:
    """Return `schema` as JSON-ready builtins (defaults omitted), for the release manifest."""
    data: dict[str, Any] = msgspec.to_builtins(schema)
    return data


def schema_from_builtins(data: Any, *, source: str = "manifest") -> Schema:
    """Rebuild a schema from `schema_to_builtins` output (or a decoded schema file).

    Parameters
    ----------
    data
        ``{"fields": [...]}`` or the bare list of fields.
    source
        What to call the data's origin in error messages.

    Raises
    ------
    SchemaError
        When `data` is not a valid schema.
    """
    return _schema_from_data(data, source=source)


def _arrow_field_type(name: str, type_: Any) -> FieldType:
    import pyarrow as pa

    types = pa.types
    if types.is_boolean(type_):
        return "bool"
    if types.is_integer(type_):
        return "int"
    if types.is_floating(type_) or types.is_decimal(type_):
        return "float"
    if types.is_string(type_) or types.is_large_string(type_) or types.is_string_view(type_):
        return "string"
    if types.is_timestamp(type_) or types.is_date(type_):
        return "timestamp"
    if types.is_dictionary(type_):
        return "category"
    raise SchemaError(
        f"column '{name}' has Arrow type {type_}, which no schema field type describes: "
        f"drop the column from the data or write a schema by hand "
        f"(types {', '.join(FIELD_TYPES)})"
    )


def schema_from_arrow(data: Any) -> Schema:
    """Infer a schema from training data.

    Arrow booleans, integers, floats/decimals, strings and timestamps/dates map to
    ``bool``, ``int``, ``float``, ``string`` and ``timestamp``; dictionary-encoded columns
    (pandas categoricals) become ``category`` fields whose values are the dictionary, in
    dictionary order. Every field is required; with a table, a field is nullable when its
    column holds nulls (with a bare schema, when the Arrow field is nullable).

    Parameters
    ----------
    data
        A `pyarrow.Table` (preferred: category values need the data) or a
        `pyarrow.Schema` without dictionary columns.

    Raises
    ------
    SchemaError
        For a column type no field type describes, or a dictionary column given only as a
        schema.
    """
    import pyarrow as pa

    table = data if isinstance(data, pa.Table) else None
    arrow_schema = table.schema if table is not None else data
    if not isinstance(arrow_schema, pa.Schema):
        raise SchemaError(
            f"schema_from_arrow needs a pyarrow Table or Schema, got {type(data).__name__}: "
            "read the data with pyarrow first"
        )
    fields: list[Field] = []
    for arrow_field in arrow_schema:
        name = arrow_field.name
        ftype = _arrow_field_type(name, arrow_field.type)
        nullable = table.column(name).null_count > 0 if table is not None else arrow_field.nullable
        values: list[str] | None = None
        if ftype == "category":
            if table is None:
                raise SchemaError(
                    f"column '{name}' is dictionary-encoded but only its type was given: "
                    "pass the pyarrow Table so the category values can be read"
                )
            chunks = table.column(name).unify_dictionaries().chunks
            dictionary = chunks[0].dictionary if chunks else pa.array([], pa.string())
            values = [str(v) for v in dictionary.to_pylist() if v is not None]
            if not values:
                raise SchemaError(
                    f"column '{name}' is dictionary-encoded but has no values: "
                    "drop the column or write a schema listing its category values"
                )
        fields.append(Field(name=name, type=ftype, nullable=nullable, values=values))
    try:
        return Schema(fields=fields)
    except _SpecError as exc:
        raise SchemaError(f"{exc.what} in the data's columns: {exc.fix}") from None
