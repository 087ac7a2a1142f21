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
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from controller.rollouts.model import HostPhase, RolloutRecord
from fleet_lab.agent_process import AgentProcess
from protocol.models import (
    AnyMessage,
    ConfigPhase,
    ConfigProgress,
    ContainerAction,
    ContainerEvent,
    ContainerState,
    Health,
    HostFacts,
    RolloutEvent,
    UpdatePhase,
    UpdateProgress,
)
from protocol.spec import ServiceSpec
from tests.support import budget_oracle as oracle
from tests.support.events import EventRecorder

SPEC_FILE = Path(__file__).resolve().parents[2] / "deploy" / "local" / "web.toml"

HEARTBEATS = "$KV.fleet_hosts.>"
"""Record this subject to give the budget check the agents' heartbeats (their HostFacts)."""
HOST_TIMEOUT = timedelta(seconds=6)
"""The fixture controller's --host-timeout: a host silent for longer is offline."""
CONTROLLER_LAG = timedelta(seconds=2)
"""How long the controller may take to learn of an outage it did not cause (the test agents
beat every second): from then on the outage counts against new work it starts."""
UPDATE_ENDS = (UpdatePhase.DONE, UpdatePhase.ROLLED_BACK, UpdatePhase.FAILED)
PROVEN_HEALTHY = (UpdatePhase.DONE, UpdatePhase.ROLLED_BACK)
"""An update that ends so has proven the service healthy on that host."""
RELOAD_VERIFIED = (ConfigPhase.APPLIED, ConfigPhase.ROLLED_BACK)
OTHER_COPIES = ("--prev", "--next", "--standby", "--switching")
"""The agent's names for a service's other containers; only the serving copy counts."""
TERMINAL = {"complete", "failed", "reverted", "aborted"}
REPLACED = (HostPhase.DONE, HostPhase.REVERTED)
"""A host in these phases was updated (or reverted) by the rollout."""


def fleet_spec(image: str, *, min_healthy: float = 0.5, deadline: float = 15.0) -> ServiceSpec:
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
                f"--host-timeout={HOST_TIMEOUT.total_seconds():g}",
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

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


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
    service: str | None = None
    """None: the whole host (its agent was offline)."""
    rollout_id: str | None = None
    why: str = "updating"
    operation_id: str | None = None
    """An update's: the command it runs (an app's members are stopped under one)."""

    def open_at(self, at: datetime, lag: timedelta = timedelta(0)) -> bool:
        """Open at ``at``, counting from ``lag`` after it began."""
        return self.start + lag <= at and (self.end is None or at < self.end)


@dataclass
class BudgetChecker:
    """Reads what the agents published and finds the hosts out of service at each moment.

    A stop-first host is out from its ``stopping_old`` phase until its update ends (done,
    rolled_back or failed), as the agents themselves reported it. A host is also out,
    whatever any rollout does, while its service's container is dead (from the engine's
    die or oom until a restart, a healthy health_status, or an update or config reload
    that proved it healthy), while Docker calls it unhealthy, while a heartbeat says it is
    not running or unhealthy, and while its agent is offline (no heartbeat within the host
    timeout; only when heartbeats were recorded, see ``HEARTBEATS``) or a test declared it
    so (``outage``). A start-first host runs two copies from ``starting_new`` to the end.
    """

    windows: list[Window] = field(default_factory=list)
    """Stop-first update windows: the old copy stopped until the update ended."""
    surges: list[Window] = field(default_factory=list)
    """A new copy running next to the old one (start-first) until the update ended."""
    outages: list[Window] = field(default_factory=list)
    """Out of service for any other reason: dead, unhealthy, offline."""
    seen: set[str] = field(default_factory=set)
    """Rollouts the recording saw at work (an agent's update, or a live status)."""
    reports: list[UpdateProgress] = field(default_factory=list)
    """Every phase the agents reported, whatever rollout it said it was for."""
    host_timeout: timedelta = HOST_TIMEOUT
    lag: timedelta = CONTROLLER_LAG

    @classmethod
    def of(
        cls,
        events: EventRecorder,
        rollout_id: str | None = None,
        *,
        heartbeats: EventRecorder | None = None,
    ) -> BudgetChecker:
        """From every update the recorder saw, or only those of one rollout; outages count
        whatever rollout was running."""
        checker = cls()
        messages = [message for _, message in events.messages]
        if heartbeats is not None:
            messages += [message for _, message in heartbeats.messages]
        checker.feed(messages)
        if rollout_id is not None:
            checker.windows = [w for w in checker.windows if w.rollout_id == rollout_id]
            checker.surges = [w for w in checker.surges if w.rollout_id == rollout_id]
        return checker

    def outage(
        self, host: str, start: datetime, end: datetime | None = None, why: str = "offline"
    ) -> None:
        """Declare a whole host out of service (a test froze or cut off its agent)."""
        self.outages.append(Window(host, start, end, why=why))

    def feed(self, messages: Iterable[AnyMessage]) -> None:
        # An agent re-publishes an event whose stream ack a dead link swallowed, under the
        # same id (the stream stores it once); a live recorder sees it twice. Counted
        # twice, a re-sent stopping_old would open a second window and leave the first
        # open for ever.
        once: dict[str, AnyMessage] = {}
        for message in messages:
            first = once.setdefault(message.id, message)
            assert first == message, f"two different messages share the id {message.id}"
        timeline = sorted(
            (m for m in once.values() if _at(m) is not None), key=lambda m: _at(m) or m.sent_at
        )
        updates: dict[tuple[str, str], Window] = {}
        surges: dict[tuple[str, str], Window] = {}
        crashes: dict[tuple[str, str], Window] = {}
        for message in timeline:
            if isinstance(message, RolloutEvent) and message.status not in TERMINAL:
                self.seen.add(message.rollout_id)
            elif isinstance(message, UpdateProgress):
                self._update(message, updates, surges, crashes)
            elif isinstance(message, ContainerEvent):
                self._engine(message, crashes)
            elif isinstance(message, ConfigProgress) and message.phase in RELOAD_VERIFIED:
                _close(crashes, (message.host, message.service), message.sent_at)
        self._heartbeats([m for m in timeline if isinstance(m, HostFacts)], timeline)

    def _update(
        self,
        message: UpdateProgress,
        updates: dict[tuple[str, str], Window],
        surges: dict[tuple[str, str], Window],
        crashes: dict[tuple[str, str], Window],
    ) -> None:
        key = (message.host, message.service)
        self.reports.append(message)
        if message.rollout_id is not None:
            self.seen.add(message.rollout_id)
        open_update = updates.get(key)
        if message.phase is UpdatePhase.STOPPING_OLD and (
            open_update is None or open_update.operation_id != message.operation_id
        ):
            # (An app's update stops its members one after another: one operation, and
            # the host is out from its first stop until it ends.)
            window = Window(
                message.host,
                message.sent_at,
                service=message.service,
                rollout_id=message.rollout_id,
                operation_id=message.operation_id,
            )
            updates[key] = window
            self.windows.append(window)
        elif message.phase is UpdatePhase.STARTING_NEW and key not in updates:
            surge = Window(
                message.host,
                message.sent_at,
                service=message.service,
                rollout_id=message.rollout_id,
                why="two copies",
            )
            surges[key] = surge
            self.surges.append(surge)
        elif message.phase in UPDATE_ENDS:
            _close(updates, key, message.sent_at)
            _close(surges, key, message.sent_at)
            if message.phase in PROVEN_HEALTHY:
                _close(crashes, key, message.sent_at)

    def _engine(self, message: ContainerEvent, crashes: dict[tuple[str, str], Window]) -> None:
        if message.service is None or message.container.endswith(OTHER_COPIES):
            return
        key = (message.host, message.service)
        down = message.action in (ContainerAction.DIE, ContainerAction.OOM) or (
            message.action is ContainerAction.HEALTH_STATUS and message.health is Health.UNHEALTHY
        )
        if down and key not in crashes:
            why = "unhealthy" if message.action is ContainerAction.HEALTH_STATUS else "dead"
            crashes[key] = Window(message.host, message.at, service=message.service, why=why)
            self.outages.append(crashes[key])
        elif message.action is ContainerAction.RESTART or message.health is Health.HEALTHY:
            _close(crashes, key, message.at)

    def _heartbeats(self, beats: list[HostFacts], timeline: list[AnyMessage]) -> None:
        """Offline between beats further apart than the host timeout (and after the last
        one, to the end of the recording), and while beats say the engine is down; not
        serving while a beat says so."""
        if not beats:
            return
        last_seen: dict[str, datetime] = {}
        sick: dict[tuple[str, str], Window] = {}
        engines_down: dict[tuple[str, str], Window] = {}
        for beat in beats:
            previous = last_seen.get(beat.host)
            if previous is not None and beat.sent_at - previous > self.host_timeout:
                start = previous + self.host_timeout
                self.outages.append(Window(beat.host, start, beat.sent_at, why="offline"))
            last_seen[beat.host] = beat.sent_at
            engine = (beat.host, "")
            if not beat.engine_down:
                _close(engines_down, engine, beat.sent_at)
            elif engine not in engines_down:  # out of every service's rollout meanwhile
                engines_down[engine] = Window(beat.host, beat.sent_at, why="engine down")
                self.outages.append(engines_down[engine])
            for status in beat.services:
                key = (beat.host, status.name)
                running = status.state in (ContainerState.RUNNING, ContainerState.ABSENT)
                if running and status.health is not Health.UNHEALTHY:
                    _close(sick, key, beat.sent_at)
                elif key not in sick:
                    why = f"{status.state.value}, {status.health.value} (heartbeat)"
                    sick[key] = Window(beat.host, beat.sent_at, service=status.name, why=why)
                    self.outages.append(sick[key])
        end = max(_at(m) or m.sent_at for m in timeline)
        for host, seen in last_seen.items():
            if end - seen > self.host_timeout:
                self.outages.append(Window(host, seen + self.host_timeout, why="offline"))

    def out_at(
        self, at: datetime, hosts: set[str], service: str, rollout_id: str | None = None
    ) -> dict[str, str]:
        """The hosts out of service at ``at`` and why: this rollout's stop-first updates,
        and outages the controller had had time to learn of."""
        out = {
            window.host: window.why
            for window in self.outages
            if window.host in hosts
            and window.service in (None, service)
            and window.open_at(at, self.lag)
        }
        for window in self.windows:
            ours = rollout_id is None or window.rollout_id == rollout_id
            if ours and window.host in hosts and window.service == service and window.open_at(at):
                out[window.host] = "updating"
        return out

    def check(self, record: RolloutRecord) -> None:
        """Fail if ``record``'s rollout ever started a host with its budget spent.

        Each time one of its hosts stopped its old copy (stop-first), the hosts then out of
        service for any reason number at most max_unavailable; each time one started a new
        copy next to the old (start-first), the hosts doing so number at most what a
        start-first update may spend. Both limits are the oracle's, of the eligible hosts.
        A rollout the recording saw at work must not pass for want of evidence: every host
        its record calls updated reported something while it ran (an update, or that the
        spec already ran), and if any replaced a container, the rollout has windows.
        """
        if record.blue_green:  # staging and retiring leave the serving copy alone
            return
        start_first = not oracle.stop_first(record)
        kind = self.surges if start_first else self.windows
        mine = [w for w in kind if w.rollout_id == record.id and w.service == record.service]
        if record.id in self.seen and record.previous is not None and record.config is None:
            self._check_evidence(record, mine)
        hosts = set(record.hosts)
        limit = oracle.allowance_of(record)
        for window in mine:
            if start_first:
                allowed = limit.start_first
                out = {w.host: w.why for w in mine if w.host in hosts and w.open_at(window.start)}
            elif record.converging:
                # README: a convergence rollout's own hosts are out of service already
                # (that is why they are in it), so of them only those it is updating
                # count, with the service's other matching hosts that are out.
                allowed = limit.unavailable
                out = self.out_at(window.start, set(record.others), record.service)
                out |= {w.host: "updating" for w in mine if w.open_at(window.start)}
            else:
                allowed = limit.unavailable
                out = self.out_at(window.start, hosts, record.service, record.id)
            assert len(out) <= allowed, (
                f"{record.id} had {len(out)} hosts out at once, allowed {allowed}, when "
                f"{window.host} started at {window.start.isoformat()}: {out}"
            )

    def _check_evidence(self, record: RolloutRecord, mine: list[Window]) -> None:
        updated = {h for h, entry in record.hosts.items() if entry.phase in REPLACED}
        during = [
            m
            for m in self.reports
            if m.service == record.service and record.created_at <= m.sent_at <= record.updated_at
        ]
        silent = updated - {m.host for m in during}
        assert not silent, (
            f"{record.id} updated {sorted(silent)} but the recording holds no report from "
            "them while it ran: the budget check would pass without evidence"
        )
        replaced = {m.host for m in during if m.phase is UpdatePhase.SNAPSHOTTING} & updated
        assert mine or not replaced, (
            f"{record.id} replaced the container on {sorted(replaced)} but the recording "
            "holds no update window for it: the budget check would pass without evidence"
        )

    def peak(self) -> int:
        """The most hosts out of service at once, for any reason."""
        windows = self.windows + self.outages
        at_each_start = ({w.host for w in windows if w.open_at(s.start)} for s in windows)
        return max((len(hosts) for hosts in at_each_start), default=0)

    def updates_per_host(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for window in self.windows:
            counts[window.host] = counts.get(window.host, 0) + 1
        return counts


def _at(message: AnyMessage) -> datetime | None:
    """When it happened: the engine's own time for its events, else when it was sent."""
    if isinstance(message, ContainerEvent):
        return message.at
    if isinstance(message, UpdateProgress | ConfigProgress | RolloutEvent | HostFacts):
        return message.sent_at
    return None


def _close(open_windows: dict[tuple[str, str], Window], key: tuple[str, str], at: datetime) -> None:
    window = open_windows.pop(key, None)
    if window is not None:
        window.end = at


__all__ = [
    "HEARTBEATS",
    "AgentProcess",
    "BudgetChecker",
    "ControllerProcess",
    "check_every_budget",
    "fleet_spec",
    "fleetctl",
]


def check_every_budget(
    events: EventRecorder,
    rollouts: list[dict[str, object]],
    *,
    heartbeats: EventRecorder | None = None,
) -> None:
    """The invariant of every fleet test: no rollout ever had more hosts out than it allowed,
    counting hosts out for any reason, and every rollout seen at work left evidence."""
    checker = BudgetChecker.of(events, heartbeats=heartbeats)
    for data in rollouts:
        checker.check(RolloutRecord.model_validate(data))
