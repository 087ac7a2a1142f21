"""Compose's interpolation, as the Compose Specification words it (12-interpolation.md):
each expected value below is read off the specification's sentences, not the code."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from controller.compose.interpolation import Interpolator
from controller.errors import ComposeError

ENV = {"SET": "value", "EMPTY": "", "OTHER": "other"}


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    return Interpolator((env if env is not None else ENV).get).text(text, "services.x.image")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # "Both $VARIABLE and ${VARIABLE} syntax is supported."
        ("$SET", "value"),
        ("${SET}", "value"),
        ("a-$SET-b", "a-value-b"),
        ("a${SET}b", "avalueb"),
        # ":-default: value of VAR if set and non-empty, otherwise default"
        ("${SET:-d}", "value"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET:-d}", "d"),
        # "-default: value of VAR if set, otherwise default"
        ("${SET-d}", "value"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        # ":+replacement: replacement if VAR is set and non-empty, otherwise empty"
        ("${SET:+r}", "r"),
        ("${EMPTY:+r}", ""),
        ("${UNSET:+r}", ""),
        # "+replacement: replacement if VAR is set, otherwise empty"
        ("${SET+r}", "r"),
        ("${EMPTY+r}", "r"),
        ("${UNSET+r}", ""),
        # "Interpolation can also be nested"
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${SET:+${OTHER}-x}", "other-x"),
        # "$$ (double-dollar sign) when your configuration needs a literal dollar sign"
        ("$$SET", "$SET"),
        ("cost: $$5", "cost: $5"),
        # anything else after a "$" is not a variable and is kept
        ("$1 and $-x and $", "$1 and $-x and $"),
        # an unset variable without a default: an empty string
        ("[$UNSET][${UNSET}]", "[][]"),
        # defaults may hold what a name may not
        ("${UNSET:-a b:c/d}", "a b:c/d"),
    ],
)
def test_interpolation_follows_the_specifications_rules(text: str, expected: str) -> None:
    assert interpolate(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET:?set it first}", "required variable UNSET is missing a value: set it first"),
        ("${EMPTY:?}", "required variable EMPTY is missing a value"),
        ("${UNSET?no}", "required variable UNSET is missing a value: no"),
    ],
)
def test_a_required_variable_without_a_value_is_an_error_with_the_files_message(
    text: str, message: str
) -> None:
    with pytest.raises(ComposeError) as raised:
        interpolate(text)
    assert raised.value.message == f"services.x.image: {message}"


def test_the_question_mark_forms_pass_a_value_that_is_there() -> None:
    assert interpolate("${SET:?x}/${EMPTY?x}") == "value/"


@pytest.mark.parametrize("text", ["${SET", "${}", "${1A}", "${SET:x}", "${SET/a/b}"])
def test_a_malformed_variable_is_an_error_naming_where_it_is(text: str) -> None:
    with pytest.raises(ComposeError) as raised:
        interpolate(text)
    assert raised.value.message.startswith("services.x.image: ")


def test_variables_without_a_value_or_default_are_reported_as_missing() -> None:
    interpolator = Interpolator(ENV.get)
    interpolator.text("$A ${B} ${C:-c} ${SET} $$D", "x")
    assert interpolator.missing == {"A", "B"}


def test_only_values_are_interpolated_never_keys() -> None:
    document = {"services": {"$SET": {"image": "r/$SET:1", "x": ["${OTHER}", 1, None]}}}
    assert Interpolator(ENV.get).values(document, "") == {
        "services": {"$SET": {"image": "r/value:1", "x": ["other", 1, None]}}
    }


NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True)
VALUES = st.text(alphabet=st.characters(blacklist_characters="$}"), max_size=8)


@given(name=NAMES, value=st.one_of(st.none(), VALUES), default=VALUES)
def test_each_default_form_picks_by_set_and_empty_as_the_specification_says(
    name: str, value: str | None, default: str
) -> None:
    env = {} if value is None else {name: value}
    set_, non_empty = value is not None, bool(value)
    event("unset" if not set_ else "empty" if not non_empty else "non-empty")
    assert interpolate(f"${{{name}:-{default}}}", env) == (value if non_empty else default)
    assert interpolate(f"${{{name}-{default}}}", env) == (value if set_ else default)
    assert interpolate(f"${{{name}:+{default}}}", env) == (default if non_empty else "")
    assert interpolate(f"${{{name}+{default}}}", env) == (default if set_ else "")
