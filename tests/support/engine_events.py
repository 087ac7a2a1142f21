"""The engine's container events, streamed while a test acts: a busy engine keeps only
its last 256 events, so asking for them afterwards (``since=``) may find older ones gone."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import docker


@contextmanager
def container_events(client: docker.DockerClient, action: str) -> Iterator[list[str]]:
    """The names of the containers ``action`` (create, destroy, ...) happens to meanwhile,
    in the engine's order; complete once the block has ended."""
    stream = client.api.events(filters={"type": "container", "event": action}, decode=True)
    names: list[str] = []

    def read() -> None:
        with contextlib.suppress(Exception):  # the stream closed under it
            names.extend(str(e["Actor"]["Attributes"].get("name", "")) for e in stream)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield names
    finally:
        stream.close()
        reader.join(timeout=10)
