from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from headrace.errors import SchemaError
from headrace.release.schema import (
    FIELD_TYPES,
    Field,
    Schema,
    load_schema,
    schema_from_arrow,
    schema_from_builtins,
    schema_to_builtins,
)

GOOD_YAML = """\
fields:
  - name: amount
    type: float
    min: 0
    max: 10000
    description: transaction amount in EUR
  - name: merchant
    type: category
    values: [grocery, travel, "yes"]
  - name: email
    type: string
    pii: true
    max_length: 120
    required: false
    nullable: true
  - name: country
    type: string
    required: false
    default: FR
  - name: at
    type: timestamp
"""


def write(tmp_path: Path, text: str, name: str = "schema.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def schema_error(tmp_path: Path, text: str, name: str = "schema.yaml") -> str:
    with pytest.raises(SchemaError) as info:
        load_schema(write(tmp_path, text, name))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load_good_yaml(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, GOOD_YAML))
    assert schema.names == ["amount", "merchant", "email", "country", "at"]
    assert schema.pii_fields == ["email"]
    amount = schema.field("amount")
    assert amount.type == "float" and amount.min == 0.0 and amount.max == 10000.0
    assert schema.field("merchant").values == ["grocery", "travel", "yes"]
    assert schema.field("country").default == "FR"
    assert schema.field("at").required is True


def test_bare_list_and_json(tmp_path: Path) -> None:
    bare = load_schema(write(tmp_path, "- {name: x, type: int}\n- {name: y, type: bool}\n"))
    assert bare.names == ["x", "y"]
    as_json = load_schema(write(tmp_path, '{"fields": [{"name": "x", "type": "int"}]}', "s.json"))
    assert as_json.names == ["x"]
    no_extension = load_schema(write(tmp_path, '[{"name": "x", "type": "float"}]', "schema"))
    assert no_extension.names == ["x"]


def test_unknown_type_names_file_path_and_fix(tmp_path: Path) -> None:
    text = (
        "fields:\n"
        "  - {name: a, type: float}\n"
        "  - {name: b, type: int}\n"
        "  - {name: c, type: flaot}\n"
    )
    message = schema_error(tmp_path, text)
    assert message.startswith("unknown type 'flaot' at $.fields[2].type in ")
    assert "schema.yaml" in message
    assert message.endswith(": use one of float, int, bool, string, category, timestamp")


def test_paths_of_bare_list_start_at_root(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "- {name: a, type: float}\n- {name: b, type: flaot}\n")
    assert "at $[1].type in" in message


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields:\n  - {name: a, type: float, nulable: true}\n")
    assert message.startswith("unknown key 'nulable' at $.fields[0] in ")
    assert message.endswith("did you mean 'nullable'?")
    message = schema_error(tmp_path, "fields:\n  - {name: a, type: float, zzz: 1}\n")
    assert "the keys allowed are name, type, required" in message


def test_an_unknown_key_with_control_characters_stays_one_line(tmp_path: Path) -> None:
    # found by hypothesis (tests/unit/test_config_properties.py): a key "\r" was echoed raw
    message = schema_error(tmp_path, 'fields:\n  - {name: a, type: float, "\\r": 1}\n')
    assert "\r" not in message and "\n" not in message
    assert message.startswith("unknown key '\\r' at $.fields[0] in ")
    message = schema_error(tmp_path, '"\\rx\\n": 1\nfields: []\n')
    assert "\r" not in message and message.startswith("unknown key '\\rx\\n' at $ in ")


def test_missing_key(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields:\n  - {name: a}\n")
    assert message.startswith("missing key 'type' at $.fields[0] in ")
    assert message.endswith(": add it")


def test_wrong_value_type_suggests_quoting_for_yaml_booleans(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields:\n  - {name: m, type: category, values: [a, no]}\n")
    assert "Expected `str`, got `bool` at $.fields[0].values[1] in" in message
    assert "quote the value" in message
    message = schema_error(tmp_path, "fields:\n  - {name: m, type: float, min: low}\n")
    assert "Expected `float | null`, got `str` at $.fields[0].min in" in message


def test_duplicate_field_name(tmp_path: Path) -> None:
    text = (
        "fields:\n  - {name: a, type: float}\n  - {name: b, type: int}\n  - {name: a, type: int}\n"
    )
    message = schema_error(tmp_path, text)
    assert message.startswith("duplicate field name 'a' at $.fields[2].name in ")
    assert message.endswith("field names must be unique; rename or remove one")


def test_category_without_values(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields:\n  - {name: m, type: category}\n")
    assert message.startswith("field 'm' has type category but no values at $.fields[0].values in")
    assert message.endswith("list the allowed values under `values:`")


def test_values_on_non_category(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields:\n  - {name: m, type: string, values: [a]}\n")
    assert "field 'm' has values but type 'string' at $.fields[0].values" in message
    assert message.endswith("remove `values` or set `type: category`")


def test_min_greater_than_max(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields:\n  - {name: x, type: float, min: 5, max: 1}\n")
    assert message.startswith("field 'x' has min 5.0 greater than max 1.0 at $.fields[0].min in")
    assert message.endswith("swap them or fix the bound")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{name: x, type: string, min: 1}", "has min but type 'string' at $.fields[0].min"),
        ("{name: x, type: int, allow_nan: true}", "has allow_nan but type 'int'"),
        ("{name: x, type: float, max_length: 3}", "has max_length but type 'float'"),
        ("{name: x, type: string, max_length: 0}", "has max_length 0"),
        ("{name: x, type: float, default: 1.0}", "has a default but is required"),
        ("{name: x, type: float, required: false}", "is optional but has no default"),
        ("{name: x, type: float, required: false, default: abc}", "which is not a number"),
        (
            "{name: x, type: category, values: [a], required: false, default: b}",
            "which is not one of ['a']",
        ),
        ("{name: x, type: timestamp, required: false, default: soon}", "not an ISO 8601"),
        ("{name: x, type: float, max: 3, required: false, default: 4}", "above max 3.0"),
        ("{name: '', type: float}", "has an empty name at $.fields[0].name"),
        ("{name: x, type: category, values: [a, a]}", "lists value 'a' twice"),
    ],
)
def test_field_checks(tmp_path: Path, entry: str, expected: str) -> None:
    message = schema_error(tmp_path, f"fields:\n  - {entry}\n")
    assert expected in message
    assert "schema.yaml: " in message


def test_valid_defaults_and_dates(tmp_path: Path) -> None:
    text = (
        "- {name: t, type: timestamp, required: false, default: 2024-01-01}\n"
        "- {name: s, type: timestamp, required: false, default: '2024-01-01T10:00:00Z'}\n"
        "- {name: b, type: bool, required: false, default: false}\n"
        "- {name: n, type: int, required: false, default: 3}\n"
    )
    schema = load_schema(write(tmp_path, text))
    assert schema.field("t").default == dt.date(2024, 1, 1)
    assert schema.field("b").default is False


def test_empty_schema(tmp_path: Path) -> None:
    assert schema_error(tmp_path, "fields: []\n").endswith(": add at least one field")
    message = schema_error(tmp_path, "# nothing but a comment\n")
    assert "expected a list of fields at $" in message


def test_top_level_keys(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields: []\nversion: 2\n")
    assert message.startswith("unknown key 'version' at $ in ")
    assert "unknown key 'field' at $ in" in schema_error(tmp_path, "{field: []}\n")
    assert schema_error(tmp_path, "{field: []}\n").endswith("did you mean 'fields'?")
    assert "missing key 'fields' at $" in schema_error(tmp_path, "{}\n")
    assert "expected a list of fields at $.fields" in schema_error(tmp_path, "fields: 3\n")


def test_invalid_yaml_gives_line(tmp_path: Path) -> None:
    message = schema_error(tmp_path, "fields:\n  - name: a\n    type: float\n   bad: [\n")
    assert message.startswith("invalid YAML in ")
    assert "schema.yaml at line 4" in message
    assert "fix the syntax" in message


def test_invalid_json_gives_line(tmp_path: Path) -> None:
    message = schema_error(tmp_path, '{"fields": [\n  {"name": "a",}\n]}', "schema.json")
    assert message.startswith("invalid JSON in ")
    assert "schema.json at line 2" in message


def test_missing_empty_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"Schema file '.*nope\.yaml' not found: check the path"):
        load_schema(tmp_path / "nope.yaml")
    with pytest.raises(SchemaError, match="is a directory"):
        load_schema(tmp_path)
    with pytest.raises(SchemaError, match="is empty"):
        load_schema(write(tmp_path, "  \n"))
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path, GOOD_YAML, "locked.yaml")
        locked.chmod(0)
        with pytest.raises(SchemaError, match="cannot be read"):
            load_schema(locked)


def test_field_rejects_invalid_construction() -> None:
    with pytest.raises(SchemaError, match="no values"):
        Field(name="m", type="category")
    with pytest.raises(SchemaError, match="duplicate field name 'a'"):
        Schema(fields=[Field(name="a", type="int"), Field(name="a", type="int")])


def test_field_lookup() -> None:
    schema = Schema(fields=[Field(name="a", type="int")])
    with pytest.raises(SchemaError, match="no field 'b' in the schema: its fields are a"):
        schema.field("b")


def test_builtins_round_trip(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, GOOD_YAML))
    data = schema_to_builtins(schema)
    assert data["fields"][0] == {
        "name": "amount",
        "type": "float",
        "min": 0.0,
        "max": 10000.0,
        "description": "transaction amount in EUR",
    }
    assert schema_from_builtins(msgspec.json.decode(msgspec.json.encode(data))) == schema
    with pytest.raises(SchemaError, match=r"unknown type 'x' at \$\.fields\[0\]\.type in manifest"):
        schema_from_builtins({"fields": [{"name": "a", "type": "x"}]})


def test_schema_from_arrow_table() -> None:
    table = pa.table(
        {
            "amount": pa.array([1.5, None]),
            "count": pa.array([1, 2], pa.int32()),
            "flag": pa.array([True, False]),
            "name": pa.array(["a", "b"]),
            "merchant": pa.array(["travel", "grocery"]).dictionary_encode(),
            "at": pa.array([0, 1], pa.timestamp("ms", tz="UTC")),
            "day": pa.array([0, 1], pa.date32()),
        }
    )
    schema = schema_from_arrow(table)
    assert [(f.name, f.type) for f in schema.fields] == [
        ("amount", "float"),
        ("count", "int"),
        ("flag", "bool"),
        ("name", "string"),
        ("merchant", "category"),
        ("at", "timestamp"),
        ("day", "timestamp"),
    ]
    assert schema.field("amount").nullable is True
    assert schema.field("count").nullable is False
    assert schema.field("merchant").values == ["travel", "grocery"]
    assert set(FIELD_TYPES) >= {f.type for f in schema.fields}


def test_schema_from_arrow_chunked_dictionaries_are_unified() -> None:
    chunks = [
        pa.array(["a", "b"]).dictionary_encode(),
        pa.array(["c", "a"]).dictionary_encode(),
    ]
    table = pa.Table.from_arrays([pa.chunked_array(chunks)], names=["m"])
    assert schema_from_arrow(table).field("m").values == ["a", "b", "c"]


def test_schema_from_arrow_errors() -> None:
    with pytest.raises(SchemaError, match="column 'tags' has Arrow type list<item: string>"):
        schema_from_arrow(pa.table({"tags": pa.array([["a"]])}))
    dictionary_schema = pa.schema([("m", pa.dictionary(pa.int32(), pa.string()))])
    with pytest.raises(SchemaError, match="pass the pyarrow Table"):
        schema_from_arrow(dictionary_schema)
    with pytest.raises(SchemaError, match="needs a pyarrow Table or Schema"):
        schema_from_arrow({"a": [1]})
    plain = schema_from_arrow(pa.schema([pa.field("x", pa.float64(), nullable=False)]))
    assert plain.field("x").nullable is False
