"""Who may publish and subscribe to what on the bus: default deny, per party.

NATS permission blocks for the three kinds of bus users, derived from the subjects the
code uses (protocol.subjects), so the two cannot drift apart:

- a host may receive only its own commands and publish only its own events, logs,
  metrics and heartbeat key, plus the JetStream calls its config watcher needs;
- the controller may send commands and run JetStream;
- a reader (dashboards, `fleetctl events`/`logs`) may only read.

Every party uses its own reply inbox prefix (``_INBOX.<name>``) and may subscribe only
to that, so nobody reads another party's replies.
"""

from __future__ import annotations

from typing import Any

from protocol import subjects

STREAMS = (subjects.EVENTS_STREAM, subjects.LOGS_STREAM, subjects.METRICS_STREAM)


def inbox_prefix(name: str) -> str:
    """The reply inbox prefix of bus user ``name`` (a host id, or a controller's name)."""
    return f"_INBOX.{subjects.validate_token(name, 'bus user name')}"


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def host_permissions(host: str) -> dict[str, Any]:
    subjects.validate_host_id(host)
    config_stream = _kv_stream(subjects.CONFIG_BUCKET)
    readable = [*STREAMS, _kv_stream(subjects.HOSTS_BUCKET), config_stream]
    return {
        "publish": {
            "allow": [
                subjects.host_events_wildcard(host),
                f"{subjects.PREFIX}.logs.{host}.>",
                subjects.metrics_subject(host),
                f"$KV.{subjects.HOSTS_BUCKET}.{host}",
                "$JS.API.INFO",
                *(f"$JS.API.STREAM.INFO.{stream}" for stream in readable),
                # The config watcher: an ordered consumer on its services' keys, and reads.
                f"$JS.API.CONSUMER.CREATE.{config_stream}",
                f"$JS.API.CONSUMER.CREATE.{config_stream}.>",
                f"$JS.API.CONSUMER.DELETE.{config_stream}.>",
                f"$JS.API.CONSUMER.INFO.{config_stream}.>",
                f"$JS.API.DIRECT.GET.{config_stream}.>",
                f"$JS.API.STREAM.MSG.GET.{config_stream}",
            ]
        },
        "subscribe": {"allow": [subjects.command_subject(host), f"{inbox_prefix(host)}.>"]},
        # Replies to the controller's requests go to the inbox the request names.
        "allow_responses": True,
    }


def controller_permissions(name: str) -> dict[str, Any]:
    return {
        "publish": {
            "allow": [
                f"{subjects.PREFIX}.cmd.>",
                f"{subjects.PREFIX}.evt.{subjects.CONTROLLER_SENDER}.>",
                "$JS.API.>",
                "$KV.>",
                "$JS.ACK.>",
                "$JS.FC.>",
            ]
        },
        "subscribe": {"allow": [f"{subjects.PREFIX}.>", f"{inbox_prefix(name)}.>", "$KV.>"]},
        "allow_responses": True,
    }


def reader_permissions(name: str) -> dict[str, Any]:
    """Read-only: follow events, logs, metrics, heartbeats and KV state; send nothing."""
    return {
        "publish": {
            "allow": [
                "$JS.API.INFO",
                "$JS.API.STREAM.INFO.>",
                "$JS.API.STREAM.NAMES",
                "$JS.API.CONSUMER.CREATE.>",
                "$JS.API.CONSUMER.DURABLE.CREATE.>",
                "$JS.API.CONSUMER.INFO.>",
                "$JS.API.CONSUMER.DELETE.>",
                "$JS.API.CONSUMER.MSG.NEXT.>",
                "$JS.API.DIRECT.GET.>",
                "$JS.API.STREAM.MSG.GET.>",
                "$JS.ACK.>",
                "$JS.FC.>",
            ]
        },
        "subscribe": {
            "allow": [
                subjects.EVENTS_WILDCARD,
                subjects.LOGS_WILDCARD,
                subjects.METRICS_WILDCARD,
                # Heartbeats as they are written (a dashboard's live host list).
                f"$KV.{subjects.HOSTS_BUCKET}.>",
                f"{inbox_prefix(name)}.>",
            ]
        },
        "allow_responses": True,
    }
