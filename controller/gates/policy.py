"""Compliance policies in Rego, evaluated with regopy before a rollout starts.

Every ``*.rego`` file of the configured directories is loaded (the shipped defaults are
in ``deploy/policies/``; operators add their own directory). Rules add messages to
``deny`` in package ``fleet.policy``; any message stops the rollout, and all of them are
listed. The input is the service spec and the image's config, as the agents will run it:

    input.spec                the ServiceSpec (JSON)
    input.image.reference     the pinned reference; .registry .repository .tag .digest
    input.image.config        the image config's "config" (User, Env, ExposedPorts...)
    data.fleet.allowed_registries, data.fleet.allowed_capabilities
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regopy import Interpreter, NodeKind, RegoError

from protocol.errors import ConfigurationError, FleetError

# A comprehension, so that a bundle without any deny rule is an empty list, not undefined
# (regopy aborts the process when asked for the binding of an undefined result).
DENY_QUERY = "deny := [message | some message in data.fleet.policy.deny]"


class PolicyError(FleetError):
    """A policy could not be evaluated (it does not compile, or deny is not a set)."""

    code = "policy_error"


@dataclass(frozen=True)
class PolicyModule:
    name: str
    text: str


def load_policies(directories: tuple[Path, ...]) -> tuple[PolicyModule, ...]:
    """Every .rego file of ``directories``, in name order; a missing directory is an error."""
    modules: list[PolicyModule] = []
    for directory in directories:
        if not directory.is_dir():
            raise ConfigurationError(f"policy directory {directory} does not exist")
        for path in sorted(directory.glob("*.rego")):
            try:
                modules.append(PolicyModule(str(path), path.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(f"cannot read policy {path}: {exc}") from exc
    return tuple(modules)


def evaluate(
    modules: tuple[PolicyModule, ...], document: dict[str, Any], data: dict[str, Any]
) -> list[str]:
    """The deny messages of ``modules`` for ``document``, sorted; empty means allowed."""
    if not modules:
        return []
    rego = Interpreter()
    try:
        for module in modules:
            rego.add_module(module.name, module.text)
        rego.add_data({"fleet": data})
        rego.set_input(document)
        output = rego.query(DENY_QUERY)
    except RegoError as exc:
        raise PolicyError(f"the policies do not compile or run: {_first_line(exc)}") from exc
    if not output.ok():
        raise PolicyError(f"the policies failed: {output}")
    # Read node by node: regopy's json() does not escape quotes inside strings.
    found = output.binding("deny")
    denied = []
    for index in range(len(found)):
        item = found.index(index)
        value = item.value
        if item.kind is not NodeKind.String or not isinstance(value, str):
            raise PolicyError(f"deny must hold strings, got {value!r}")
        denied.append(_unescape(value))
    return sorted(denied)


def _unescape(value: str) -> str:
    """regopy hands strings over with their JSON escapes still in."""
    try:
        text = json.loads(f'"{value}"')
    except ValueError:
        return value
    return text if isinstance(text, str) else value


def _first_line(exc: Exception) -> str:
    """regopy's errors are an S-expression; the module and message are what people need."""
    text = str(exc)
    found = re.search(r"\(error \d+:([^|]*)\|.*?\(errormsg \d+:([^)]*)\)", text, re.DOTALL)
    if found:
        return f"{found.group(1)}: {found.group(2)}"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
