"""The engine's container events, streamed while a test acts: a busy engine keeps only
its last 256 events, so asking for them afterwards (``since=``) may find older ones gone."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import docker

SETTLE = 30.0
"""Seconds the stream may take to deliver what the engine did before the block ended."""


@contextmanager
def container_events(
    client: docker.DockerClient, action: Literal["create", "destroy"], image: str
) -> Iterator[list[str]]:
    """The names of the containers ``action`` happens to meanwhile, in the engine's
    order; complete once the block has ended. To know the stream has caught up, the end
    makes (and removes) a container of ``image`` and waits for its event: the engine
    sends its events in order."""
    stream = client.api.events(filters={"type": "container", "event": action}, decode=True)
    names: list[str] = []

    def read() -> None:
        with contextlib.suppress(Exception):  # the stream closed under it
            names.extend(str(e["Actor"]["Attributes"].get("name", "")) for e in stream)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield names
        end = f"fleetwave-events-end-{uuid.uuid4().hex[:10]}"
        container = client.api.create_container(image, name=end, command=["true"])
        client.api.remove_container(container["Id"], force=True)
        give_up = time.monotonic() + SETTLE
        while end not in names:  # a condition polled, not a pause
            assert time.monotonic() < give_up, f"the engine's {action} events stopped coming"
            time.sleep(0.05)
        names.remove(end)
    finally:
        stream.close()
        reader.join(timeout=10)
