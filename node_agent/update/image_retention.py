"""Old images of a service removed after each successful update: real hosts fill their
disks with the images of every version they ever ran.

The agent notes, per service, the images it ran for it, newest first (in its state
directory): after each update the one it replaced, then the one it runs. It then removes
those beyond the newest ``images.keep`` of the spec, but never:
- an image any service on this host runs or would go back to by a rollback (its current
  and previous specs), nor the one the service runs now;
- an image a container uses, running or stopped (a blue-green switch-back's other
  colour, a set-aside copy, or anything else on the host);
- an image the engine will not remove (tagged twice, or in another repository too): it
  is left to whoever tagged it.
Images the agent never ran for the service (pulled by a pre-flight whose rollout stopped,
or by hand) are not the service's: they are left alone. Removing never fails an update.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from node_agent.resources import disk_for_report
from node_agent.runtime import DockerRuntime
from node_agent.state_files import read_json, write_json
from node_agent.update.service_store import ServiceStore
from protocol.errors import RuntimeFault
from protocol.image_ref import parse_image_reference
from protocol.models import ImagesPruned

log = logging.getLogger("fleet-agent")
MAX_REMOVED_PER_EVENT = 100

PublishPruned = Callable[[ImagesPruned], Awaitable[None]]


async def pruned_nowhere(event: ImagesPruned) -> None:
    """Until the daemon sets where the news goes."""


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

    def _write(self, service: str, images: list[RanImage]) -> None:
        write_json(self._path(service), [{"id": i.image_id, "ref": i.ref} for i in images])


async def prune_images(
    engine: DockerRuntime, history: ImageHistory, service: str, keep: int, protect: set[str]
) -> Pruned:
    """Remove the service's images beyond the newest ``keep``, except those in
    ``protect`` (image ids) and those a container uses. An engine fault stops it; what
    was removed by then is still reported."""
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
        try:
            if await engine.remove_image(image.image_id):
                removed.append(image)
        except RuntimeFault as exc:
            log.warning("%s: removing %s failed: %s", service, image.ref, exc.message)
            break
    history.drop(service, {i.image_id for i in removed})
    free_after = await asyncio.to_thread(lambda: disk_for_report(root).free)
    return Pruned(tuple(removed), max(0, free_after - free_before))


class ImageRetention:
    """What the updater calls once an update succeeded (and its outcome is stored)."""

    def __init__(
        self, engine: DockerRuntime, services: ServiceStore, history: ImageHistory, host: str
    ) -> None:
        self._engine = engine
        self._services = services
        self._history = history
        self._host = host
        self.publish: PublishPruned = pruned_nowhere
        """Set by the daemon: publishes what was removed."""

    async def after_update(self, service: str, container: str, operation_id: str) -> None:
        """``container`` serves ``service`` now, as its current spec says, whose
        ``images.keep`` counts."""
        try:
            pruned = await self._prune(service, container)
        except Exception:  # never fails an update that is done: logged, tried next time
            log.exception("%s: old images not removed", service)
            return
        await self._report(service, operation_id, pruned)

    async def make_room(self, service: str, operation_id: str) -> int:
        """A pre-flight short of disk, where the spec allows it: remove every image of
        the service's that nothing needs (images.prune_on_low_disk). Returns the bytes
        that came back; an engine fault removes nothing more and returns what went."""
        try:
            protect = await self._needed_by_services()
            pruned = await prune_images(self._engine, self._history, service, 0, protect)
        except RuntimeFault as exc:  # the pre-flight measures again and says what it finds
            log.warning("%s: no room made: %s", service, exc.message)
            return 0
        await self._report(service, operation_id, pruned)
        return pruned.freed_bytes

    async def _report(self, service: str, operation_id: str, pruned: Pruned) -> None:
        for first in range(0, len(pruned.removed), MAX_REMOVED_PER_EVENT):
            images = pruned.removed[first : first + MAX_REMOVED_PER_EVENT]
            await self.publish(
                ImagesPruned(
                    sender=self._host,
                    host=self._host,
                    service=service,
                    operation_id=operation_id,
                    removed=tuple(i.ref for i in images),
                    freed_bytes=pruned.freed_bytes if first == 0 else 0,
                )
            )

    async def _prune(self, service: str, container: str) -> Pruned:
        current = self._services.current(service)
        running = await self._engine.inspect_container(container)
        if current is None or running is None:
            return Pruned((), 0)
        replaced = self._services.previous(service)
        if replaced is not None:  # (ran before this agent kept a history, perhaps)
            found = await self._local_image(replaced.image)
            if found is not None:
                self._history.ran(service, found)
        now = RanImage(str(running["Image"]), str(running["Config"]["Image"]))
        self._history.ran(service, now)
        protect = await self._needed_by_services()
        protect.add(now.image_id)
        keep = current.images.keep
        return await prune_images(self._engine, self._history, service, keep, protect)

    async def _needed_by_services(self) -> set[str]:
        """The images every service here runs or would go back to."""
        needed: set[str] = set()
        for name in self._services.names():
            for spec in (self._services.current(name), self._services.previous(name)):
                found = await self._local_image(spec.image) if spec is not None else None
                if found is not None:
                    needed.add(found.image_id)
        return needed

    async def _local_image(self, image: str) -> RanImage | None:
        local = parse_image_reference(image).local
        found = await self._engine.inspect_image(local)
        return RanImage(str(found["Id"]), local) if found is not None else None
