"""Old images of a service removed after each successful update: real hosts fill their
disks with the images of every version they ever ran.

The agent notes, per service, the images it ran for it, newest first (in its state
directory). After an update succeeded it removes those beyond the newest ``images.keep``
of the spec, but never:
- the image the service's previous spec runs (what a rollback goes back to);
- an image a container uses, running or stopped (a blue-green switch-back's other
  colour, a set-aside copy, or anything else on the host);
- an image tagged in another repository too (the engine refuses; it is left to whoever
  tagged it).
Images the agent never ran for the service (pulled by a pre-flight whose rollout stopped,
or by hand) are not the service's: they are left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from node_agent.resources import disk_for_report
from node_agent.state_files import read_json, write_json
from protocol.models import ImagesPruned

PublishPruned = Callable[[ImagesPruned], Awaitable[None]]


async def pruned_nowhere(event: ImagesPruned) -> None:
    """Until the daemon sets where the news goes."""


class ImageEngine(Protocol):
    async def remove_image(self, image_id: str) -> bool: ...

    async def images_in_use(self) -> set[str]: ...

    async def root_dir(self) -> str: ...


@dataclass(frozen=True)
class RanImage:
    image_id: str
    ref: str
    """The reference the service ran it by (for people)."""


@dataclass(frozen=True)
class Pruned:
    removed: tuple[RanImage, ...]
    freed_bytes: int
    """Free space on the engine's disk that came back (0 if it could not be told)."""


class ImageHistory:
    """Per service, the images the agent ran for it, newest first."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def _path(self, service: str) -> Path:
        return self._dir / f"{service}.json"

    def images(self, service: str) -> list[RanImage]:
        entries = read_json(self._path(service)) or []
        return [RanImage(e["id"], e["ref"]) for e in entries]

    def ran(self, service: str, image: RanImage) -> None:
        """``image`` now runs the service: the newest."""
        others = [i for i in self.images(service) if i.image_id != image.image_id]
        self._write(service, [image, *others])

    def drop(self, service: str, image_ids: set[str]) -> None:
        self._write(service, [i for i in self.images(service) if i.image_id not in image_ids])

    def forget(self, service: str) -> None:
        self._path(service).unlink(missing_ok=True)

    def _write(self, service: str, images: list[RanImage]) -> None:
        write_json(self._path(service), [{"id": i.image_id, "ref": i.ref} for i in images])


async def prune_images(
    engine: ImageEngine, history: ImageHistory, service: str, keep: int, protect: set[str]
) -> Pruned:
    """Remove the service's images beyond the newest ``keep``, except those in
    ``protect`` (image ids) and those a container uses."""
    beyond = history.images(service)[keep:]
    if not beyond:
        return Pruned((), 0)
    in_use = await engine.images_in_use()
    root = await engine.root_dir()
    free_before = await asyncio.to_thread(lambda: disk_for_report(root).free)
    removed: list[RanImage] = []
    for image in beyond:
        if image.image_id in protect or image.image_id in in_use:
            continue
        if await engine.remove_image(image.image_id):
            removed.append(image)
    history.drop(service, {i.image_id for i in removed})
    free_after = await asyncio.to_thread(lambda: disk_for_report(root).free)
    return Pruned(tuple(removed), max(0, free_after - free_before))
