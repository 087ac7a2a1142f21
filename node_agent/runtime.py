"""The agent's one door to the Docker engine.

Blocking docker SDK calls run in worker threads with a deadline, and every docker or
transport exception is restated as RuntimeFault (``raise ... from``), so the rest of the
agent handles one error type. Containers are addressed by name; the agent's own labels
mark what it manages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from node_agent.blocking_stream import drain_in_thread
from protocol.errors import RuntimeFault, RuntimeTimeout

T = TypeVar("T")
log = logging.getLogger("fleet-agent.runtime")
OWN_STARTS_KEPT = 256
EXEC_THREADS = 4

MANAGED_LABEL = "io.fleetwave.managed"
SERVICE_LABEL = "io.fleetwave.service"
AGENT_LABEL = "io.fleetwave.agent"

Inspect = dict[str, Any]


@dataclass(frozen=True)
class PullResult:
    image_id: str
    repo_digests: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class PullProgress:
    layers_total: int
    layers_done: int
    bytes_done: int
    bytes_total: int

    @property
    def fraction(self) -> float:
        """The share of the bytes to download that arrived, below 1 while the pull runs.

        Not a share of layers: the engine names them one by one, and its first message
        ("already exists" for a shared layer) would read as a finished pull.
        """
        if not self.bytes_total:
            return 0.0
        return min(self.bytes_done / self.bytes_total, UNFINISHED)

    def describe(self) -> str:
        return (
            f"{self.layers_done}/{self.layers_total} layers, "
            f"{self.bytes_done / 1e6:.1f} of {self.bytes_total / 1e6:.1f} MB"
        )


UNFINISHED = 0.99
"""The most a running pull reports; 1.0 is sent once the image is really here."""


class PullTracker:
    """Folds the engine's per-layer pull messages into one running total."""

    _DONE = frozenset({"Pull complete", "Already exists", "Download complete"})

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._done: set[str] = set()

    def feed(self, event: dict[str, Any]) -> PullProgress | None:
        layer = event.get("id")
        status = str(event.get("status") or "")
        if not layer or status.startswith(("Pulling from", "Digest:", "Status:")):
            return None
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            self._current[layer] = int(detail.get("current") or 0)
            self._total[layer] = int(detail["total"])
        elif status in self._DONE:
            self._done.add(layer)
            if layer in self._total:
                self._current[layer] = self._total[layer]
        else:
            self._current.setdefault(layer, 0)
        return self.snapshot()

    def snapshot(self) -> PullProgress:
        layers = set(self._current) | self._done
        return PullProgress(
            layers_total=len(layers),
            layers_done=len(self._done),
            bytes_done=sum(self._current.values()),
            bytes_total=sum(self._total.values()),
        )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest first, as /proc tells them."""
    found: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        children = [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return found
    for child in children:
        found.extend(descendants(child))
        found.append(child)
    return found


class DockerRuntime:
    def __init__(self, base_url: str, timeout: float) -> None:
        self._base_url = base_url
        self._timeout = timeout
        # Ids this agent started, so a start the engine did on its own can be told apart.
        self._own_starts: OrderedDict[str, None] = OrderedDict()
        self._client: docker.APIClient | None = None
        self._client_lock = threading.Lock()
        # Exec probes run a program of the container's and may hang past their deadline
        # (the thread cannot be killed); they get threads of their own, so a hung one
        # never holds up the calls that replace or restore containers.
        self._exec_threads = ThreadPoolExecutor(EXEC_THREADS, thread_name_prefix="docker-exec")

    @property
    def _api(self) -> docker.APIClient:
        """Made on first use, which is always in a worker thread: it asks the engine for
        its API version, and an agent must start (and report) while the engine is down."""
        with self._client_lock:
            if self._client is None:
                self._client = docker.APIClient(
                    base_url=self._base_url, timeout=self._timeout, version="auto"
                )
            return self._client

    def close(self) -> None:
        self._exec_threads.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def _call(
        self,
        what: str,
        func: Callable[[], T],
        timeout: float | None = None,
        threads: ThreadPoolExecutor | None = None,
    ) -> T:
        deadline = timeout if timeout is not None else self._timeout
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(deadline):  # not wait_for: see probes.probe_once
                return await loop.run_in_executor(threads, func)
        except TimeoutError as exc:
            raise RuntimeTimeout(f"docker {what}: no answer within {deadline:g}s") from exc
        except docker.errors.DockerException as exc:
            raise RuntimeFault(f"docker {what}: {_explain(exc)}") from exc
        except requests.RequestException as exc:
            raise RuntimeFault(f"docker {what}: engine unreachable ({exc})") from exc

    async def ensure_volume(
        self, name: str, driver: str | None, options: dict[str, str], labels: dict[str, str]
    ) -> None:
        """A named volume, made if missing (never changed if it exists)."""

        def ensure() -> None:
            try:
                self._api.inspect_volume(name)
            except docker.errors.NotFound:
                self._api.create_volume(name, driver or "local", options, labels)

        await self._call(f"create volume {name}", ensure)

    async def ensure_network(
        self, name: str, driver: str | None, options: dict[str, str], labels: dict[str, str],
        internal: bool,
    ) -> None:  # fmt: skip
        """A named network, made if missing (never changed if it exists)."""

        def ensure() -> None:
            # The engine's name filter matches parts of names: compare whole ones.
            if not any(n.get("Name") == name for n in self._api.networks(names=[name])):
                self._api.create_network(
                    name, driver=driver or "bridge", options=options, labels=labels,
                    internal=internal, check_duplicate=True,
                )  # fmt: skip

        await self._call(f"create network {name}", ensure)

    async def has_volume(self, name: str) -> bool:
        def look() -> bool:
            try:
                self._api.inspect_volume(name)
            except docker.errors.NotFound:
                return False
            return True

        return await self._call(f"inspect volume {name}", look)

    async def has_network(self, name: str) -> bool:
        def look() -> bool:  # whole names: the engine's filter matches parts of them
            return any(n.get("Name") == name for n in self._api.networks(names=[name]))

        return await self._call(f"inspect network {name}", look)

    async def connect_network(self, container: str, network: str, aliases: list[str]) -> None:
        await self._call(
            f"connect {container} to {network}",
            lambda: self._api.connect_container_to_network(
                container, network, aliases=aliases or None
            ),
        )

    # ---- engine ----

    async def ping(self) -> bool:
        return bool(await self._call("ping", lambda: self._api.ping(), timeout=5))

    async def version(self) -> str:
        info = await self._call("version", lambda: self._api.version(), timeout=5)
        return str(info.get("Version", "unknown"))

    async def root_dir(self) -> str:
        info = await self._call("info", lambda: self._api.info(), timeout=10)
        return str(info.get("DockerRootDir", "/var/lib/docker"))

    # ---- images ----

    async def pull(
        self,
        repository: str,
        reference: str,
        auth: dict[str, str] | None,
        timeout: float,
        progress: Callable[[PullProgress], None] | None = None,
    ) -> PullResult:
        """Pull ``repository`` at a tag or digest; returns what is then local.

        ``progress`` is called from the pulling thread with each running total.
        """

        def pull_and_inspect() -> PullResult:
            tracker = PullTracker()
            for event in self._api.pull(
                repository, tag=reference, stream=True, decode=True, auth_config=auth
            ):
                if "error" in event:
                    raise docker.errors.APIError(str(event["error"]))
                update = tracker.feed(event)
                if update is not None and progress is not None:
                    progress(update)
            separator = "@" if reference.startswith("sha256:") else ":"
            info = self._api.inspect_image(f"{repository}{separator}{reference}")
            return PullResult(
                image_id=info["Id"],
                repo_digests=tuple(info.get("RepoDigests") or ()),
                size=int(info.get("Size") or 0),
            )

        return await self._call(f"pull {repository}", pull_and_inspect, timeout=timeout)

    async def inspect_image(self, image: str) -> Inspect | None:
        def inspect() -> Inspect | None:
            try:
                result: Inspect = self._api.inspect_image(image)
            except docker.errors.ImageNotFound:
                return None
            return result

        return await self._call(f"inspect image {image}", inspect)

    async def remove_image(self, image_id: str) -> bool:
        """Remove an image nothing needs; False if the engine refused (a container uses
        it, or it is tagged in another repository too). Gone already counts as removed."""

        def remove() -> bool:
            try:
                self._api.remove_image(image_id, force=False)
            except docker.errors.ImageNotFound:
                return True
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return False
                raise
            return True

        return await self._call(f"remove image {image_id[:19]}", remove)

    async def images_in_use(self) -> set[str]:
        """The ids of the images of every container, running or not."""

        def listing() -> set[str]:
            return {str(c.get("ImageID")) for c in self._api.containers(all=True)}

        return await self._call("list containers", listing)

    # ---- containers ----

    async def inspect_container(self, name: str) -> Inspect | None:
        def inspect() -> Inspect | None:
            try:
                result: Inspect = self._api.inspect_container(name)
            except docker.errors.NotFound:
                return None
            return result

        return await self._call(f"inspect {name}", inspect)

    async def create_container(
        self, name: str, config: dict[str, Any], host_config: dict[str, Any]
    ) -> str:
        def create() -> str:
            result = self._api.create_container(
                name=name, host_config=host_config, **_create_kwargs(config)
            )
            return str(result["Id"])

        return await self._call(f"create {name}", create)

    async def start(self, container: str) -> None:
        self._own_starts[container] = None
        while len(self._own_starts) > OWN_STARTS_KEPT:
            self._own_starts.popitem(last=False)
        await self._call(f"start {container}", lambda: self._api.start(container))

    def started_by_agent(self, container_id: str) -> bool:
        """Whether this agent started the container (once per start; for the event follower)."""
        return self._own_starts.pop(container_id, False) is None

    async def stop(self, container: str, grace_period: float) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after ``grace_period``.

        A stop whose answer never came but which the engine carried out is a stop: the
        container is read back, and only one still running makes it a fault."""
        grace = max(0, round(grace_period))
        try:
            await self._call(
                f"stop {container}",
                lambda: self._api.stop(container, timeout=grace),
                timeout=self._timeout + grace,
            )
        except RuntimeTimeout as late:
            try:
                info = await self.inspect_container(container)
            except RuntimeFault:
                raise late from None
            # Gone counts as stopped: an auto-removed container goes once it stops.
            if info is not None and (info.get("State") or {}).get("Running", True):
                raise

    async def restart(self, container: str, grace_period: float) -> None:
        grace = max(0, round(grace_period))
        self._own_starts[container] = None
        await self._call(
            f"restart {container}",
            lambda: self._api.restart(container, timeout=grace),
            timeout=self._timeout + grace,
        )

    async def kill(self, container: str, signal: str = "SIGKILL") -> None:
        await self._call(f"kill {container}", lambda: self._api.kill(container, signal=signal))

    async def set_restart_policy(self, container: str, policy: str) -> None:
        await self._call(
            f"update {container}",
            lambda: self._api.update_container(container, restart_policy={"Name": policy}),
        )

    async def rename(self, container: str, new_name: str) -> None:
        await self._call(f"rename {container}", lambda: self._api.rename(container, new_name))

    async def remove(self, container: str, *, volumes: bool = False) -> None:
        """Remove it, running or not; ``volumes``: its anonymous volumes too."""

        def remove() -> None:
            try:
                self._api.remove_container(container, force=True, v=volumes)
            except docker.errors.NotFound:
                return

        await self._call(f"remove {container}", remove)

    async def logs_tail(self, container: str, lines: int) -> list[str]:
        def tail() -> list[str]:
            try:
                raw = self._api.logs(container, stdout=True, stderr=True, tail=lines)
            except docker.errors.NotFound:
                return []
            return bytes(raw).decode(errors="replace").splitlines()

        return await self._call(f"logs {container}", tail)

    async def exec(
        self,
        container: str,
        command: list[str],
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """Run ``command`` in ``container``: its exit code and output. Past ``timeout`` the
        command is killed (by its host pid: the agent shares the host's pid namespace)
        and RuntimeTimeout is raised."""
        what = f"exec in {container}"
        created = await self._call(
            what,
            lambda: self._api.exec_create(
                container, command, stdout=True, stderr=True, environment=env
            ),
        )
        exec_id = str(created["Id"])
        try:
            output = await self._call(
                what,
                lambda: self._api.exec_start(exec_id),
                timeout=timeout,
                threads=self._exec_threads,
            )
        except RuntimeTimeout:
            await self._kill_exec(exec_id)
            raise
        inspected = await self._call(what, lambda: self._api.exec_inspect(exec_id))
        code = inspected.get("ExitCode")
        return (int(code) if code is not None else -1), bytes(output).decode(errors="replace")

    async def _kill_exec(self, exec_id: str) -> None:
        """Kill a timed-out exec and everything it started (by host pids, from /proc)."""
        try:
            inspected = await self._call("exec inspect", lambda: self._api.exec_inspect(exec_id))
            pid = int(inspected["Pid"])
            for each in [*descendants(pid), pid] if pid > 0 else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(each, signal.SIGKILL)
        except (RuntimeFault, PermissionError, KeyError, ValueError) as exc:
            log.warning("could not kill the timed-out exec %s: %s", exec_id[:12], exc)

    async def events(
        self, labels: list[str], actions: list[str], since: int | None, stop: asyncio.Event
    ) -> AsyncGenerator[Inspect, None]:
        """Container events with ``labels`` and ``actions``, until ``stop`` or the stream ends.

        The caller reopens it, with ``since``, after an engine restart: the iterator simply
        ends.
        """
        # The engine filters by action too (health_status matches every "health_status: x"),
        # so the exec events of healthchecks never reach this process.
        filters = {"type": "container", "label": labels, "event": actions}
        stream = await self._call(
            "events", lambda: self._api.events(since=since, filters=filters, decode=True)
        )
        async for event in drain_in_thread(stream, stop, "docker-events"):
            yield dict(event)

    async def follow_logs(
        self, container: str, stream_name: str, since: float | None, stop: asyncio.Event
    ) -> AsyncGenerator[bytes, None]:
        """Raw chunks of one output stream ("stdout" or "stderr"), each line prefixed by
        the engine's RFC 3339 timestamp, until ``stop`` or the container stops."""
        stream = await self._call(
            f"logs {container}",
            lambda: self._api.logs(
                container,
                stdout=stream_name == "stdout",
                stderr=stream_name == "stderr",
                stream=True,
                follow=True,
                timestamps=True,
                since=since,
            ),
        )
        async for chunk in drain_in_thread(stream, stop, f"docker-logs-{container[:12]}"):
            yield bytes(chunk)

    async def stats(self, container: str) -> Inspect:
        """One sample of the stats API, without its one-second wait for a second one."""

        def sample() -> Inspect:
            result: Inspect = self._api.stats(container, stream=False, one_shot=True)
            return result

        return await self._call(f"stats {container}", sample, timeout=10)

    async def list_managed(self, agent_id: str) -> list[Inspect]:
        def listing() -> list[Inspect]:
            found = self._api.containers(
                all=True, filters={"label": [f"{MANAGED_LABEL}=1", f"{AGENT_LABEL}={agent_id}"]}
            )
            return [dict(item) for item in found]

        return await self._call("list containers", listing)


def _create_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Map an inspect-style Config onto APIClient.create_container's keyword arguments."""
    kwargs: dict[str, Any] = {
        "image": config["Image"],
        "command": config.get("Cmd"),
        "entrypoint": config.get("Entrypoint"),
        "environment": config.get("Env"),
        "labels": config.get("Labels"),
        "user": config.get("User") or None,
        "working_dir": config.get("WorkingDir") or None,
        "stop_signal": config.get("StopSignal"),
        "stop_timeout": config.get("StopTimeout"),
        "domainname": config.get("Domainname") or None,
        "healthcheck": config.get("Healthcheck"),
        "hostname": config.get("Hostname") or None,
        "tty": bool(config.get("Tty")),
        "stdin_open": bool(config.get("OpenStdin")),
        "networking_config": config.get("NetworkingConfig"),
    }
    if config.get("ExposedPorts"):
        kwargs["ports"] = [_port_key(key) for key in config["ExposedPorts"]]
    if config.get("Volumes"):
        kwargs["volumes"] = list(config["Volumes"])
    return kwargs


def _port_key(key: str) -> int | tuple[int, str]:
    number, _, protocol = key.partition("/")
    return (int(number), protocol) if protocol and protocol != "tcp" else int(number)


def _explain(exc: docker.errors.DockerException) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)
