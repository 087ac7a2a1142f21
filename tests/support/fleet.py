"""A real local fleet for controller tests: agents and controllers as child processes.

Each agent is a `fleet-agent run` with its own container prefix on the one local engine;
the service is the demo's spec file (network mode "none", probed by exec inside the
container), so five copies of it never clash on a port.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from controller.planner import limits
from controller.rollout import RolloutRecord
from protocol.models import AnyMessage, UpdatePhase, UpdateProgress
from protocol.spec import ServiceSpec
from tests.support.agent_process import AgentProcess
from tests.support.events import EventRecorder

SPEC_FILE = Path(__file__).resolve().parents[2] / "deploy" / "local" / "web.toml"


def fleet_spec(image: str, *, min_healthy: float = 1.0, deadline: float = 15.0) -> ServiceSpec:
    """deploy/local/web.toml, the demo's own spec file, with this test's image and timing."""
    spec = ServiceSpec.model_validate(tomllib.loads(SPEC_FILE.read_text()))
    assert spec.health is not None
    health = spec.health.model_copy(
        update={"min_healthy_time": min_healthy, "healthy_deadline": deadline}
    )
    return spec.model_copy(update={"image": image, "health": health})


def fleetctl_executable() -> str:
    return str(Path(sys.executable).parent / "fleetctl")


@dataclass
class ControllerProcess:
    """`fleetctl controller run` as a child process (so a test can SIGKILL it)."""

    nats_url: str
    log_path: Path
    controller_id: str
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                fleetctl_executable(),
                "controller",
                "run",
                f"--nats={self.nats_url}",
                f"--id={self.controller_id}",
                "--tick=0.2",
                "--lease-ttl=3",
                "--host-timeout=6",
                env={**os.environ, **self.env},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    async def stop(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.process.terminate()
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class CommandResult:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


async def spawn_fleetctl(
    nats_url: str, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        fleetctl_executable(),
        *args,
        env={**os.environ, "FLEET_NATS_URL": nats_url, "COLUMNS": "200", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def fleetctl(
    nats_url: str, *args: str, timeout: float = 240.0, env: dict[str, str] | None = None
) -> CommandResult:
    process = await spawn_fleetctl(nats_url, *args, env=env)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CommandResult(process.returncode, out.decode(), err.decode())


@asynccontextmanager
async def fleetctl_running(nats_url: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A long-running fleetctl (``logs -f``, ``exporter``), terminated on the way out."""
    process = await spawn_fleetctl(nats_url, *args)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.communicate()


@dataclass
class Window:
    host: str
    start: datetime
    end: datetime | None = None


@dataclass
class BudgetChecker:
    """Reads the agents' phase events and finds the most hosts ever out of service at once.

    A stop-first host is out of service from its ``stopping_old`` phase until its update
    ends (done, rolled_back or failed), as the agents themselves reported it.
    """

    windows: list[Window] = field(default_factory=list)

    @classmethod
    def of(cls, events: EventRecorder, rollout_id: str | None = None) -> BudgetChecker:
        """From every update the recorder saw, or only those of one rollout."""
        checker = cls()
        checker.feed(
            [
                message
                for _, message in events.messages
                if rollout_id is None
                or (isinstance(message, UpdateProgress) and message.rollout_id == rollout_id)
            ]
        )
        return checker

    def feed(self, messages: list[AnyMessage]) -> None:
        open_windows: dict[str, Window] = {}
        for message in sorted(
            (m for m in messages if isinstance(m, UpdateProgress)), key=lambda m: m.sent_at
        ):
            if message.phase is UpdatePhase.STOPPING_OLD:
                window = Window(message.host, message.sent_at)
                open_windows[message.host] = window
                self.windows.append(window)
            elif message.phase in (UpdatePhase.DONE, UpdatePhase.ROLLED_BACK, UpdatePhase.FAILED):
                ended = open_windows.pop(message.host) if message.host in open_windows else None
                if ended is not None:
                    ended.end = message.sent_at

    def peak(self) -> int:
        edges: list[tuple[datetime, int]] = []
        for window in self.windows:
            edges.append((window.start, 1))
            if window.end is not None:
                edges.append((window.end, -1))
        # At the same instant an end comes before a start: back-to-back is not overlap.
        edges.sort(key=lambda edge: (edge[0], edge[1]))
        current = peak = 0
        for _, change in edges:
            current += change
            peak = max(peak, current)
        return peak

    def updates_per_host(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for window in self.windows:
            counts[window.host] = counts.get(window.host, 0) + 1
        return counts


__all__ = [
    "AgentProcess",
    "BudgetChecker",
    "ControllerProcess",
    "check_every_budget",
    "fleet_spec",
    "fleetctl",
]


def check_every_budget(events: EventRecorder, rollouts: list[dict[str, object]]) -> None:
    """The invariant of every fleet test: no rollout ever had more hosts out than it allowed."""
    for data in rollouts:
        record = RolloutRecord.model_validate(data)
        allowed = limits(record, len(record.hosts)).max_unavailable
        peak = BudgetChecker.of(events, record.id).peak()
        assert peak <= allowed, f"{record.id} had {peak} hosts out at once, allowed {allowed}"
