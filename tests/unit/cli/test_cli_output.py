"""What people read from the CLI: values instead of reprs, and predict's exit codes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.cli.output import human
from headrace.cli.predict import EXIT_NOTHING_SCORED, EXIT_TOO_MANY_REJECTED, parse_keep, verdict

# text without quotes or "None" of its own, so any in the output would be a repr's
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text("abc xyz019.-", max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_human_never_shows_a_python_repr(value: object) -> None:
    text = human(value)
    assert "None" not in text and "'" not in text and ": " not in text


def test_human_examples() -> None:
    assert human({"min": [None, 0.0]}) == "min=[-, 0]"
    assert human({"threshold": 0.5, "labels": ["legit", "fraud"], "parent": None}) == (
        "threshold=0.5, labels=[legit, fraud]"
    )
    assert human("ab" * 32) == "ab" * 6  # a digest, shortened
    assert human([]) == "-" and human(None) == "-" and human(True) == "true"


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(min_value=0, max_value=10_000),
    data=st.data(),
    ratio=st.none() | st.floats(min_value=0.0, max_value=1.0),
)
def test_verdict_is_zero_exactly_when_something_scored_within_the_ratio(
    rows: int, data: st.DataObject, ratio: float | None
) -> None:
    predicted = data.draw(st.integers(min_value=0, max_value=rows))
    code, why = verdict(rows=rows, predicted=predicted, max_reject_ratio=ratio)
    rejected = rows - predicted
    if predicted == 0:
        assert code == EXIT_NOTHING_SCORED and "no row could be scored" in why
    elif ratio is not None and rejected / rows > ratio:
        assert code == EXIT_TOO_MANY_REJECTED and f"{rejected:,} of {rows:,}" in why
    else:
        assert (code, why) == (0, "")


@pytest.mark.parametrize(
    ("given_", "expected"),
    [(None, []), ("", []), ("id", ["id"]), (" id , region,", ["id", "region"])],
)
def test_parse_keep(given_: str | None, expected: list[str]) -> None:
    assert parse_keep(given_) == expected
