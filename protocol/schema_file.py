"""The JSON Schema of every bus message, for subscribers written in other languages.

``python -m protocol.schema_file`` writes ``protocol/schema/fleet-messages.schema.json``;
a test fails when the committed file and the models disagree.

The file is plain JSON Schema 2020-12, for strict validators in any language: pydantic's
OpenAPI ``discriminator`` mapping is dropped (each message's ``kind`` is a required
``const`` instead, so ``oneOf`` picks exactly one model), and the only formats are ones
2020-12 defines. The payloads are msgpack, not JSON: the schema describes the map a
msgpack decoder yields, written as JSON. Date-times (msgpack timestamps) are RFC 3339
strings there, and bytes (msgpack bin) are standard base64 strings (RFC 4648 section 4,
with padding), declared with ``contentEncoding: base64`` and a pattern that checks it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from protocol import SCHEMA_VERSION
from protocol.models import MESSAGE_ADAPTER

SCHEMA_PATH = Path(__file__).parent / "schema" / "fleet-messages.schema.json"
ENCODING_NOTE = (
    "Fleetwave bus messages, schema_version {version}. Each NATS message payload is one "
    "msgpack map; its 'kind' field selects the message type. This schema describes that "
    "map written as JSON: date-times (msgpack timestamps, extension type -1) as RFC 3339 "
    "strings, bytes (msgpack bin) as standard base64 strings with padding "
    "(contentEncoding base64); everything else maps onto JSON types as shown. "
    "Subjects: fleet.cmd.<host> (commands, request/reply), "
    "fleet.evt.<host|controller>.<type> (events), fleet.logs.<host>.<service> (log_batch), "
    "fleet.metrics.<host> (metrics)."
)
BASE64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"
"""Standard base64's alphabet (RFC 4648 section 4), padding at the end only.

Not the exact grammar (a length of a multiple of four): a repeated group over a 256 KiB
config file overflows the stack of backtracking regex engines such as Java's."""
ENVELOPE_REQUIRED = ("kind", "schema_version")
"""Read before the model is chosen (protocol/codec.py): a message without them is refused,
though the models give both a default."""


def base64_length(size: int) -> int:
    """Characters of the padded base64 text of ``size`` bytes."""
    return 4 * -(-size // 3)


class _StandardJsonSchema(GenerateJsonSchema):
    """pydantic's generator, with bytes written as base64 text in standard keywords."""

    def bytes_schema(self, schema: core_schema.BytesSchema) -> JsonSchemaValue:
        # pydantic writes format "binary" (or "base64url"), which 2020-12 does not define.
        json_schema: JsonSchemaValue = {
            "type": "string",
            "contentEncoding": "base64",
            "pattern": BASE64_PATTERN,
        }
        if "min_length" in schema:
            json_schema["minLength"] = base64_length(schema["min_length"])
        if "max_length" in schema:
            json_schema["maxLength"] = base64_length(schema["max_length"])
        return json_schema


def message_schema() -> dict[str, Any]:
    schema = MESSAGE_ADAPTER.json_schema(mode="validation", schema_generator=_StandardJsonSchema)
    defs: dict[str, Any] = schema["$defs"]
    for reference, field in _drop_discriminators(schema):
        _require(defs, reference, field)
    for choice in schema["oneOf"]:
        for field in ENVELOPE_REQUIRED:
            _require(defs, choice["$ref"], field)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://fleetwave.dev/schema/v{SCHEMA_VERSION}/fleet-messages.schema.json",
        "title": "Fleetwave bus message",
        "description": ENCODING_NOTE.format(version=SCHEMA_VERSION),
        **schema,
    }


def _drop_discriminators(node: object) -> list[tuple[str, str]]:
    """Remove each OpenAPI ``discriminator`` beside a ``oneOf``; (choice, property) pairs.

    The choices already fix the property with a ``const``; made required, it also keeps
    a value without it from matching the one choice whose other fields happen to fit.
    """
    found: list[tuple[str, str]] = []
    if isinstance(node, list):
        for item in node:
            found += _drop_discriminators(item)
    elif isinstance(node, dict):
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict) and "propertyName" in discriminator and "oneOf" in node:
            del node["discriminator"]
            found += [
                (ref, discriminator["propertyName"]) for ref in discriminator["mapping"].values()
            ]
        for value in node.values():
            found += _drop_discriminators(value)
    return found


def _require(defs: dict[str, Any], reference: str, field: str) -> None:
    model = defs[reference.removeprefix("#/$defs/")]
    if field not in model["properties"]:
        raise ValueError(f"{reference} has no property {field!r} to require")
    required: list[str] = model.setdefault("required", [])
    if field not in required:
        required.append(field)


def render() -> str:
    return json.dumps(message_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(render())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")


if __name__ == "__main__":
    main()
