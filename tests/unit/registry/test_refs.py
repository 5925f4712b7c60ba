"""Release references."""

from __future__ import annotations

import pytest

from headrace.errors import ConfigError
from headrace.registry.refs import ReleaseRef, parse_ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fraud:3", ReleaseRef("fraud", version=3)),
        ("fraud@shadow", ReleaseRef("fraud", alias="shadow")),
        ("fraud", ReleaseRef("fraud", alias="champion")),
        ("fraud-v2.eu_west", ReleaseRef("fraud-v2.eu_west", alias="champion")),
    ],
)
def test_parse(text: str, expected: ReleaseRef) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize("text", ["", "fraud:", "fraud:x", "fraud@", "fraud@1x", "-x", "a:1@b"])
def test_malformed_refs_say_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="NAME:VERSION|aliases start with a letter"):
        parse_ref(text)
