"""The registry's input checks at their boundaries: alias and tag names, verification states.

Each refusal is a `ConfigError` whose one-line message names the bad value; every
accepted value is exactly what `ALIAS_PATTERN` (or `VERIFICATIONS`) allows.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import ConfigError
from headrace.registry._aliases import check_alias, check_forced
from headrace.registry._records import VERIFICATIONS, check_verification
from headrace.registry._tags import check_tag
from headrace.registry.refs import ALIAS_PATTERN

_NAMES = st.one_of(
    st.from_regex(ALIAS_PATTERN, fullmatch=True),
    st.text(max_size=70),
    st.text(alphabet="abz09_-", min_size=60, max_size=70),
)


@settings(max_examples=200, deadline=None)
@given(name=_NAMES)
def test_alias_and_tag_names_follow_the_pattern(name: str) -> None:
    valid = ALIAS_PATTERN.fullmatch(name) is not None
    for check, noun in ((check_alias, "alias"), (check_tag, "tag")):
        if valid:
            check(name)
            continue
        with pytest.raises(ConfigError) as caught:
            check(name)
        message = str(caught.value)
        assert message.startswith(f"Invalid {noun} '{name}'")
        assert "letters, digits" in message


@settings(max_examples=100, deadline=None)
@given(state=st.one_of(st.none(), st.sampled_from(VERIFICATIONS), st.text(max_size=12)))
def test_only_known_verification_states_are_recorded(state: str | None) -> None:
    if state is None or state in VERIFICATIONS:
        check_verification(state)
        return
    with pytest.raises(ConfigError, match="Invalid verification") as caught:
        check_verification(state)
    assert repr(state) in str(caught.value)


@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_a_forced_alias_move_needs_a_reason(reason: str) -> None:
    with pytest.raises(ConfigError, match=r"Forcing 'fraud@champion' to version 3 needs a reason"):
        check_forced(name="fraud", alias="champion", version=3, force=True, reason=reason)
    check_forced(name="fraud", alias="champion", version=3, force=False, reason=reason)
    check_forced(name="fraud", alias="champion", version=3, force=True, reason="hotfix")
