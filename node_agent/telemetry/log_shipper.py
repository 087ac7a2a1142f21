"""Ships the logs of this agent's containers to ``fleet.logs.<host>.<service>``.

Every running managed container is followed (stdout and stderr, with the engine's
timestamps) from where this agent last shipped it: a cursor per container in the state
dir, so neither an agent restart nor a container restart loses or repeats lines. New
containers (an update, a blue-green stage) are found by looking every second and are
read from their first line, so a replacement is followed without a gap. Lines are
batched per container: up to ``max_lines`` or ``max_bytes``, or ``flush_interval``
after the first line, whichever comes first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from node_agent.runtime import SERVICE_LABEL, DockerRuntime
from node_agent.telemetry.outbox import Outgoing
from protocol import subjects
from protocol.codec import encode
from protocol.errors import ProtocolError, RuntimeFault
from protocol.models import MAX_LOG_LINE, LogBatch, LogEntry

log = logging.getLogger("fleet-agent.logs")
StreamName = Literal["stdout", "stderr"]
CUT_MARKER = " [line cut]"
CURSOR_SAVE_EVERY = 2.0


@dataclass(frozen=True)
class LogShipping:
    flush_interval: float = 0.25
    max_lines: int = 500
    max_bytes: int = 256 * 1024
    discovery_interval: float = 1.0


def parse_docker_timestamp(text: str) -> datetime | None:
    """Docker's RFC 3339 with up to nine fractional digits (Python takes six)."""
    if not text.endswith("Z"):
        return None
    whole, _, fraction = text[:-1].partition(".")
    try:
        stamp = datetime.fromisoformat(whole).replace(tzinfo=UTC)
        micros = int((fraction + "000000")[:6]) if fraction else 0
    except ValueError:
        return None
    return stamp.replace(microsecond=micros)


class LineSplitter:
    """Chunks in, whole ``(timestamp, line)`` pairs out; a torn last line waits."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        data = self._rest + chunk
        *complete, self._rest = data.split(b"\n")
        out = []
        for raw in complete:
            stamp, _, text = raw.decode(errors="replace").partition(" ")
            out.append((stamp, text.rstrip("\r")))
        return out


@dataclass
class Batch:
    lines: list[LogEntry] = field(default_factory=list)
    size: int = 0
    first_stamp: str = ""
    last_stamp: str = ""
    opened_at: float = 0.0


class ContainerLogs:
    """One container followed on both streams into one batch."""

    def __init__(
        self,
        shipper: LogShipper,
        container_id: str,
        service: str,
        since: float | None,
        skip_through: str,
    ) -> None:
        self._shipper = shipper
        self.container_id = container_id
        self.service = service
        self._since = since
        # Compared with every line read, so made comparable once.
        self._skip_key = _stamp_key(skip_through) if skip_through else None
        self._batch = Batch()
        self.last_stamp = skip_through

    async def run(self, stop: asyncio.Event) -> None:
        readers = [
            asyncio.create_task(self._read(name, stop), name=f"logs-{name}")
            for name in ("stdout", "stderr")
        ]
        flusher = asyncio.create_task(self._flush_loop(stop), name="logs-flush")
        try:
            await asyncio.gather(*readers)
        finally:
            for reader in readers:
                reader.cancel()
            flusher.cancel()
            await asyncio.gather(*readers, flusher, return_exceptions=True)
            self._flush()

    async def _read(self, name: StreamName, stop: asyncio.Event) -> None:
        splitter = LineSplitter()
        runtime = self._shipper.runtime
        try:
            stream = runtime.follow_logs(self.container_id, name, self._since, stop)
            async with aclosing(stream) as chunks:
                async for chunk in chunks:
                    for stamp, text in splitter.feed(chunk):
                        self._add(name, stamp, text)
        except RuntimeFault as exc:
            log.info("logs of %s (%s): %s", self.service, name, exc.message)

    def _add(self, name: StreamName, stamp: str, text: str) -> None:
        # Docker's stamps are fixed-width only up to trailing zeros, so compare as times.
        when = parse_docker_timestamp(stamp)
        if when is None:
            return
        if self._skip_key is not None and _stamp_key(stamp) <= self._skip_key:
            return  # shipped before this follow began
        if len(text) > MAX_LOG_LINE:
            text = text[:MAX_LOG_LINE] + CUT_MARKER
        batch = self._batch
        if not batch.lines:
            batch.opened_at = asyncio.get_running_loop().time()
            batch.first_stamp = stamp
        batch.lines.append(LogEntry(stream=name, timestamp=when, line=text))
        batch.size += len(text) + 48
        batch.last_stamp = stamp
        limits = self._shipper.shipping
        if len(batch.lines) >= limits.max_lines or batch.size >= limits.max_bytes:
            self._flush()

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        interval = self._shipper.shipping.flush_interval
        while not stop.is_set():
            await asyncio.sleep(interval / 2)
            batch = self._batch
            if batch.lines and asyncio.get_running_loop().time() - batch.opened_at >= interval:
                self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, Batch()
        if not batch.lines:
            return
        self.last_stamp = batch.last_stamp
        self._shipper.ship(self, batch)


class LogShipper:
    def __init__(
        self,
        runtime: DockerRuntime,
        host: str,
        agent_id: str,
        cursor_dir: Path,
        send: Callable[[Outgoing], None],
        shipping: LogShipping,
    ) -> None:
        self.runtime = runtime
        self.shipping = shipping
        self._host = host
        self._agent_id = agent_id
        self._cursors = cursor_dir
        self._send = send
        self._followed: dict[str, tuple[asyncio.Task[None], ContainerLogs]] = {}
        self._saved_at: dict[str, float] = {}
        self._started_at = datetime.now(UTC)

    async def run(self, stop: asyncio.Event) -> None:
        self._cursors.mkdir(parents=True, exist_ok=True)
        try:
            while not stop.is_set():
                try:
                    await self._discover(stop)
                except RuntimeFault as exc:
                    log.warning("cannot list containers for log shipping: %s", exc.message)
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.shipping.discovery_interval)
        finally:
            tasks = [task for task, _ in self._followed.values()]
            await asyncio.gather(*tasks, return_exceptions=True)
            for _, follower in self._followed.values():
                self._save_cursor(follower.container_id, follower.last_stamp, force=True)

    async def _discover(self, stop: asyncio.Event) -> None:
        containers = await self.runtime.list_managed(self._agent_id)
        present = {str(item["Id"]) for item in containers}
        for container_id in list(self._followed):
            task, follower = self._followed[container_id]
            if task.done():
                del self._followed[container_id]
                self._save_cursor(container_id, follower.last_stamp, force=True)
        for item in containers:
            container_id = str(item["Id"])
            service = (item.get("Labels") or {}).get(SERVICE_LABEL)
            if item.get("State") != "running" or not service or container_id in self._followed:
                continue
            self._follow(container_id, service, int(item.get("Created") or 0), stop)
        self._forget_cursors(present)

    def _follow(self, container_id: str, service: str, created: int, stop: asyncio.Event) -> None:
        cursor = self._load_cursor(container_id)
        if cursor:
            when = parse_docker_timestamp(cursor)
            since = when.timestamp() if when else None
        elif created < int(self._started_at.timestamp()):
            # Older than this agent and never shipped: start now rather than flood the
            # bus with its whole history.
            since, cursor = self._started_at.timestamp(), ""
        else:
            since = None  # new since this agent started: from its very first line
        follower = ContainerLogs(self, container_id, service, since, cursor)
        task = asyncio.create_task(follower.run(stop), name=f"logs-{service}")
        self._followed[container_id] = (task, follower)

    def ship(self, follower: ContainerLogs, batch: Batch) -> None:
        message = LogBatch(
            id=_batch_id(follower.container_id, batch),
            sender=self._host,
            host=self._host,
            service=follower.service,
            container_id=follower.container_id[:128],
            lines=tuple(batch.lines),
        )
        try:
            payload = encode(message)
        except ProtocolError as exc:  # cannot happen within max_bytes; never crash on it
            log.error("log batch of %s not shipped: %s", follower.service, exc)
            return
        self._send(
            Outgoing(
                subjects.log_subject(self._host, follower.service),
                payload,
                message.id,
                log_lines=len(batch.lines),
            )
        )
        self._save_cursor(follower.container_id, batch.last_stamp)

    # ---- cursors: the last shipped stamp per container ----

    def _load_cursor(self, container_id: str) -> str:
        try:
            return (self._cursors / container_id).read_text().strip()
        except OSError:
            return ""

    def _save_cursor(self, container_id: str, stamp: str, *, force: bool = False) -> None:
        if not stamp:
            return
        now = asyncio.get_running_loop().time()
        if not force and now - self._saved_at.get(container_id, 0.0) < CURSOR_SAVE_EVERY:
            return
        self._saved_at[container_id] = now
        # A cursor lost to a power cut repeats a few lines at worst: no fsync needed.
        path = self._cursors / container_id
        temp = path.with_name(f".{container_id}.tmp")
        try:
            temp.write_text(stamp)
            os.replace(temp, path)
        except OSError as exc:
            log.warning("log cursor of %s not saved: %s", container_id[:12], exc)

    def _forget_cursors(self, present: set[str]) -> None:
        for path in self._cursors.iterdir():
            if not path.name.startswith(".") and path.name not in present:
                path.unlink(missing_ok=True)
                self._saved_at.pop(path.name, None)


def _stamp_key(stamp: str) -> tuple[str, str]:
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return whole, fraction.ljust(9, "0")


def _batch_id(container_id: str, batch: Batch) -> str:
    # The same lines re-shipped after a restart get the same id: stored once.
    key = f"{container_id}/{batch.first_stamp}/{batch.last_stamp}/{len(batch.lines)}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]
