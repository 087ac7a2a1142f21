"""`.env` and `env_file` files, as Compose reads them.

One ``KEY=VALUE`` (or ``KEY: VALUE``) a line, an optional ``export`` before it, ``#``
lines and blank lines ignored. A bare ``KEY`` takes its value from the environment (and
is left out when it has none). Unquoted values are trimmed, end at `` #`` and are
interpolated; double-quoted values may span lines, know the escapes ``\\n \\t \\r \\\\
\\" \\$`` and are interpolated; single-quoted values are taken literally. Variables
resolve from the environment first, then from the lines above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from controller.compose.interpolation import Interpolator
from controller.errors import ComposeError

_LINE_START = re.compile(r"\s*(?:export\s+)?([A-Za-z0-9_.\-\[\]]+)\s*(?:([=:])\s*)?")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$$"}
"""``\\$`` must stay a literal dollar through interpolation: it becomes ``$$``."""
MAX_BYTES = 1 << 20


def read_env_file(
    path: Path, environ: Mapping[str, str], interpolate: bool = True
) -> dict[str, str]:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ComposeError(f"{path}: larger than 1 MiB; not an env file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComposeError(f"{path}: no such env file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(f"{path}: cannot be read ({type(exc).__name__})") from None
    return parse_env(text, environ, str(path), interpolate)


def parse_env(
    text: str, environ: Mapping[str, str], where: str, interpolate: bool = True
) -> dict[str, str]:
    found: dict[str, str] = {}

    def lookup(name: str) -> str | None:
        return environ.get(name, found.get(name))

    interpolator = Interpolator(lookup)
    position, line_number = 0, 1
    while position < len(text):
        line_end = text.find("\n", position)
        line_end = len(text) if line_end < 0 else line_end
        line = text[position:line_end]
        here = f"{where}:{line_number}"
        if not line.strip() or line.lstrip().startswith("#"):
            position, line_number = line_end + 1, line_number + 1
            continue
        start = _LINE_START.match(text, position, line_end)
        if start is None:
            raise ComposeError(f"{here}: not a KEY=VALUE line")
        key = start.group(1)
        if start.group(2) is None:  # a bare KEY: from the environment
            if text[start.end() : line_end].strip():
                raise ComposeError(f"{here}: not a KEY=VALUE line")
            if key in environ:
                found[key] = environ[key]
            position, line_number = line_end + 1, line_number + 1
            continue
        value, literal, position = _value(text, start.end(), here)
        line_number += text.count("\n", start.end(), position) + 1
        position += 1  # past the newline
        found[key] = value if literal or not interpolate else interpolator.text(value, here)
    return found


def _value(text: str, start: int, where: str) -> tuple[str, bool, int]:
    """The value from ``start``; whether it is literal; where its line ends."""
    quote = text[start] if start < len(text) else ""
    if quote in ("'", '"'):
        end = _closing_quote(text, start, quote)
        if end is None:
            raise ComposeError(f"{where}: no closing {quote} for the value")
        rest_end = text.find("\n", end)
        rest_end = len(text) if rest_end < 0 else rest_end
        rest = text[end + 1 : rest_end].strip()
        if rest and not rest.startswith("#"):
            raise ComposeError(f"{where}: unexpected text after the quoted value")
        body = text[start + 1 : end]
        if quote == "'":
            return body.replace("\\'", "'"), True, rest_end
        return _unescape(body), False, rest_end
    line_end = text.find("\n", start)
    line_end = len(text) if line_end < 0 else line_end
    raw = text[start:line_end]
    comment = re.search(r"\s#", raw)
    if comment is not None:
        raw = raw[: comment.start()]
    return raw.strip(), False, line_end


def _closing_quote(text: str, start: int, quote: str) -> int | None:
    position = start + 1
    while position < len(text):
        if text[position] == "\\":
            position += 2
            continue
        if text[position] == quote:
            return position
        if quote == "'" and text[position] == "\n":
            return None  # single quotes stay on one line
        position += 1
    return None


def _unescape(body: str) -> str:
    out: list[str] = []
    position = 0
    while position < len(body):
        char = body[position]
        if char == "\\" and position + 1 < len(body):
            escaped = body[position + 1]
            out.append(_ESCAPES.get(escaped, "\\" + escaped))
            position += 2
            continue
        out.append(char)
        position += 1
    return "".join(out)
