"""`.env` and env_file, as the Compose documentation describes the format (env-file.md):
expected values are read off its rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.compose.dotenv import parse_env, read_env_file
from controller.errors import ComposeError

FILE = """\
# a comment line, and a blank one

PLAIN=value
export EXPORTED=yes
SPACED = padded value
COLON: value with a colon form
INLINE=before # after a space it is a comment
HASH=a#b
SINGLE='literal $PLAIN \\n stays'
DOUBLE="tab\\there, $PLAIN, \\$dollar, \\"quoted\\""
MULTI="first
second"
FROM_ENV
UNSET_BARE
EMPTY=
REF=${PLAIN}-${FROM_ENV}-${NOPE:-fallback}
"""


def test_an_env_file_is_read_by_the_formats_rules() -> None:
    found = parse_env(FILE, {"FROM_ENV": "shell", "PLAIN": "ignored?"}, ".env")
    assert found == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "padded value",
        "COLON": "value with a colon form",
        "INLINE": "before",
        "HASH": "a#b",
        "SINGLE": "literal $PLAIN \\n stays",
        # interpolation sees the environment first, then the lines above
        "DOUBLE": 'tab\there, ignored?, $dollar, "quoted"',
        "MULTI": "first\nsecond",
        "FROM_ENV": "shell",
        "EMPTY": "",
        "REF": "ignored?-shell-fallback",
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [("GOOD=1\n=nokey\n", 2), ("A=1\nB='open\n", 2), ('A="x" trailing\n', 1), ("A B\n", 1)],
)
def test_a_bad_line_is_named_by_its_number(text: str, line: int) -> None:
    with pytest.raises(ComposeError) as raised:
        parse_env(text, {}, "app/.env")
    assert raised.value.message.startswith(f"app/.env:{line}: ")


def test_a_missing_env_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ComposeError) as raised:
        read_env_file(tmp_path / "nope.env", {})
    assert raised.value.message == f"{tmp_path / 'nope.env'}: no such env file"
