"""The committed JSON Schema describes exactly the models the code speaks."""

from __future__ import annotations

import json

from protocol import SCHEMA_VERSION
from protocol.models import MESSAGE_KINDS
from protocol.schema_file import SCHEMA_PATH, render


def test_the_committed_schema_file_matches_the_models() -> None:
    assert SCHEMA_PATH.read_text() == render(), (
        "protocol/schema/fleet-messages.schema.json is stale: run `make schema`"
    )


def test_the_schema_names_every_message_kind_and_the_schema_version() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    kinds: list[str] = []
    for choice in schema["oneOf"]:
        model = schema["$defs"][choice["$ref"].removeprefix("#/$defs/")]
        kinds.append(model["properties"]["kind"]["const"])
        assert model["properties"]["schema_version"]["maximum"] == SCHEMA_VERSION
    assert sorted(kinds) == sorted(MESSAGE_KINDS)
    assert f"schema_version {SCHEMA_VERSION}" in schema["description"]
