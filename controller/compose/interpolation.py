"""Compose's variable interpolation, as the Compose Specification gives it.

``$VAR`` and ``${VAR}``; ``${VAR:-default}`` (unset or empty) and ``${VAR-default}``
(unset); ``${VAR:?message}`` and ``${VAR?message}`` (an error); ``${VAR:+other}`` and
``${VAR+other}`` (the other value when set); defaults, messages and other values are
interpolated in turn, so they nest. ``$$`` is a literal ``$``; a ``$`` that starts no
variable is kept. Only values are interpolated, never keys. A variable that is not set
and has no default is an empty string, and is reported as missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.errors import ComposeError

_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_BRACED = re.compile(r"([_A-Za-z][_A-Za-z0-9]*)(?:(:?[-+?])(.*))?", re.DOTALL)

Lookup = Callable[[str], str | None]


@dataclass
class Interpolator:
    lookup: Lookup
    missing: set[str] = field(default_factory=set)
    """Variables used without a value or a default (Compose warns of each)."""

    def text(self, value: str, where: str) -> str:
        out: list[str] = []
        position = 0
        while True:
            dollar = value.find("$", position)
            if dollar < 0:
                out.append(value[position:])
                return "".join(out)
            out.append(value[position:dollar])
            position = self._one(value, dollar, out, where)

    def _one(self, value: str, dollar: int, out: list[str], where: str) -> int:
        """Expands what starts at ``dollar`` into ``out``; returns where to go on."""
        after = dollar + 1
        if value.startswith("$", after):
            out.append("$")
            return after + 1
        if value.startswith("{", after):
            end = _closing_brace(value, after)
            if end is None:  # (the value is not shown: it may be a secret)
                raise ComposeError(f"{where}: a ${{ without its closing brace")
            out.append(self._braced(value[after + 1 : end], where))
            return end + 1
        name = _NAME.match(value, after)
        if name is None:
            out.append("$")  # not a variable: kept as it is
            return after
        out.append(self._value(name.group(), where) or "")
        return name.end()

    def _braced(self, body: str, where: str) -> str:
        match = _BRACED.fullmatch(body)
        if match is None:
            raise ComposeError(
                f"{where}: invalid interpolation: not ${{NAME}}, ${{NAME:-default}}, ..."
            )
        name, operator, rest = match.group(1), match.group(2), match.group(3) or ""
        found = self.lookup(name)
        if operator is None:
            if found is None:
                self.missing.add(name)
            return found or ""
        empty_counts = operator.startswith(":")
        unset = found is None or (empty_counts and found == "")
        kind = operator[-1]
        if kind == "-":
            return self.text(rest, where) if unset else str(found)
        if kind == "+":
            return "" if unset else self.text(rest, where)
        if unset:  # "?": an error, with the file's own message
            message = self.text(rest, where)
            raise ComposeError(
                f"{where}: required variable {name} is missing a value"
                + (f": {message}" if message else "")
            )
        return str(found)

    def _value(self, name: str, where: str) -> str | None:
        found = self.lookup(name)
        if found is None:
            self.missing.add(name)
        return found

    def values(self, node: object, where: str) -> object:
        """Every string value in ``node`` (mappings and lists, recursively) interpolated."""
        if isinstance(node, str):
            return self.text(node, where)
        if isinstance(node, Mapping):
            return {
                key: self.values(item, f"{where}.{key}" if where else str(key))
                for key, item in node.items()
            }
        if isinstance(node, list):
            return [self.values(item, f"{where}[{n}]") for n, item in enumerate(node)]
        return node


def _closing_brace(value: str, opening: int) -> int | None:
    """The index of the brace that closes the one at ``opening``; nested ``${`` count."""
    depth, position = 1, opening + 1
    while position < len(value):
        if value.startswith("$$", position):
            position += 2
            continue
        if value.startswith("${", position):
            depth += 1
            position += 2
            continue
        if value[position] == "}":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    return None
