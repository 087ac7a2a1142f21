"""The JSON Schema of every bus message, for subscribers written in other languages.

``python -m protocol.schema_file`` writes ``protocol/schema/fleet-messages.schema.json``;
a test fails when the committed file and the models disagree. The payloads are msgpack,
not JSON: the schema describes the map a msgpack decoder yields, where date-times are
msgpack timestamps (extension type -1) and ``format: binary`` strings are msgpack bin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from protocol import SCHEMA_VERSION
from protocol.models import MESSAGE_ADAPTER

SCHEMA_PATH = Path(__file__).parent / "schema" / "fleet-messages.schema.json"
ENCODING_NOTE = (
    "Fleetwave bus messages, schema_version {version}. Each NATS message payload is one "
    "msgpack map; its 'kind' field selects the message type. Date-times are msgpack "
    "timestamps (extension type -1), bytes are msgpack bin; everything else maps onto "
    "JSON types as shown. Subjects: fleet.cmd.<host> (commands, request/reply), "
    "fleet.evt.<host|controller>.<type> (events), fleet.logs.<host>.<service> (log_batch), "
    "fleet.metrics.<host> (metrics)."
)


def message_schema() -> dict[str, Any]:
    schema = MESSAGE_ADAPTER.json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://fleetwave.dev/schema/v{SCHEMA_VERSION}/fleet-messages.schema.json",
        "title": "Fleetwave bus message",
        "description": ENCODING_NOTE.format(version=SCHEMA_VERSION),
        **schema,
    }


def render() -> str:
    return json.dumps(message_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(render())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")


if __name__ == "__main__":
    main()
