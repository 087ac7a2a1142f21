"""Reading a Compose file: YAML 1.2 (duplicate keys refused, anchors and merge keys
kept), variables interpolated from the environment and the project's `.env`, then checked
against the Compose Specification's JSON Schema, in that order, as Compose does."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from controller.compose.dotenv import read_env_file
from controller.compose.interpolation import Interpolator
from controller.errors import ComposeError

MAX_BYTES = 4 << 20


def load_compose(path: Path, environ: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    """The file's document, interpolated and valid by the schema; and the variables it
    used that had no value (Compose warns of each and uses an empty string)."""
    document = parse_yaml(_read(path), str(path))
    variables = dict(environ)
    dotenv = path.parent / ".env"
    if dotenv.is_file():  # the environment wins over .env
        variables = {**read_env_file(dotenv, environ), **environ}
    interpolator = Interpolator(variables.get)
    interpolated = interpolator.values(document, "")
    assert isinstance(interpolated, dict)
    check_schema(interpolated)
    return interpolated, interpolator.missing


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ComposeError(f"{path}: larger than 4 MiB; not a Compose file")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComposeError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(f"{path}: cannot be read ({type(exc).__name__})") from None


def parse_yaml(text: str, where: str) -> dict[str, Any]:
    yaml = YAML(typ="rt")  # the round-trip loader is the one that refuses duplicate keys
    try:
        loaded = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" (line {mark.line + 1})" if mark is not None else ""
        # ruamel's text of a duplicate key quotes both values: one may be a secret.
        problem = "a key is given twice" if isinstance(exc, DuplicateKeyError) else exc.problem
        raise ComposeError(f"{where}: not valid YAML{line}: {problem}") from None
    except YAMLError as exc:
        raise ComposeError(f"{where}: not valid YAML: {type(exc).__name__}") from None
    plain = _plain(loaded, where)
    if not isinstance(plain, dict):
        raise ComposeError(f"{where}: a Compose file is a mapping (services: ...)")
    return plain


def _plain(node: object, where: str) -> object:
    """ruamel's nodes as plain dicts, lists and scalars (merge keys already applied)."""
    if isinstance(node, TaggedScalar) or getattr(getattr(node, "tag", None), "value", None):
        tag = node.tag.value if hasattr(node, "tag") else "?"
        if tag and tag.startswith("!"):
            raise ComposeError(f"{where}: YAML tag {tag} is not supported")
    if isinstance(node, Mapping):
        return {str(key): _plain(value, f"{where}.{key}") for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item, f"{where}[{n}]") for n, item in enumerate(node)]
    if isinstance(node, datetime.date):
        return node.isoformat()  # an unquoted date in YAML 1.2 is still a string to Compose
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    raise ComposeError(f"{where}: unexpected YAML value {type(node).__name__}")


def compose_schema() -> dict[str, Any]:
    schema_text = resources.files("controller.compose").joinpath("spec/compose-spec.json")
    schema: dict[str, Any] = json.loads(schema_text.read_text(encoding="utf-8"))
    return schema


def check_schema(document: dict[str, Any]) -> None:
    """The first (most relevant) schema violation, named by its path in the file. The
    schema says draft-07 in a form jsonschema does not recognise: it is named here. The
    bad value itself is never quoted: it may be a secret."""
    error = best_match(Draft7Validator(compose_schema()).iter_errors(document))
    if error is None:
        return
    parts = [str(part) for part in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties") or {}
        patterns = error.schema.get("patternProperties") or {}
        extra = [
            key
            for key in error.instance
            if key not in allowed and not any(re.search(p, key) for p in patterns)
        ]
        if extra:
            raise ComposeError(f"{'.'.join([*parts, extra[0]])}: not a Compose key here")
    path = ".".join(parts) or "(top level)"
    raise ComposeError(
        f"{path}: {_why(str(error.validator), error.validator_value, error.message)}"
    )


def _why(validator: str, expected: object, message: str) -> str:
    if validator == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return f"must be {' or '.join(str(k) for k in kinds)}"
    if validator == "enum" and isinstance(expected, list):
        return f"must be one of {', '.join(str(v) for v in expected)}"
    if validator == "required":
        return message  # names the missing key, never a value
    if validator in ("oneOf", "anyOf"):
        return "is none of the forms the specification allows here"
    return f"does not pass the specification's {validator} check"
