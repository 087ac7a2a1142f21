"""The running agent's side of an upgrade: start the successor, wait until it is ready,
hand the host's commands over, and be stopped by it.

Apply of the ``fleet-agent`` service (protocol.agent_service) lands here. The successor
is a copy of this agent's own container (the same mounts, network and settings) from the
new image, run under ``fleet-agent-guard`` (node_agent/upgrade/guard.py), which brings
this agent's container back if the successor dies before its probation is over. If the
successor is not ready in time, crashes, or cannot reach the bus, it is removed and this
agent keeps serving: the operation is rolled back, with the successor's last log lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from node_agent.runtime import DockerRuntime
from node_agent.settings import AgentSettings
from node_agent.update.operation import Emit, OperationResult
from node_agent.upgrade.handoff_files import DONE, READY, RELEASED, REQUEST, TAKEN, HandoffNotes
from protocol.agent_service import AGENT_SERVICE, READY_DEADLINE, ready_deadline
from protocol.errors import CommandRefused, RuntimeFault
from protocol.image_ref import parse_image_reference
from protocol.models import (
    ContainerState,
    FailureBundle,
    Health,
    OperationOutcome,
    Reason,
    ServiceStatus,
    UpdatePhase,
)
from protocol.spec import ServiceSpec

POLL = 0.2
LOG_TAIL = 20
GIVE_UP_TEXT = {  # (reason code, past the ready deadline) -> what happened
    ("successor_not_ready", True): "the successor was not ready in time",
    ("successor_not_ready", False): "the successor stopped before it was ready",
    ("commands_in_flight", True): "commands in flight did not finish in time",
    ("commands_in_flight", False): "commands in flight did not finish in time",
    ("successor_did_not_take_over", True): "the successor did not take over in time",
    ("successor_did_not_take_over", False): "the successor stopped before it took over",
    ("successor_failed", True): "the successor failed as it took over",
    ("successor_failed", False): "the successor failed as it took over",
}


class HandedOver(Exception):
    """The command is the successor's to answer now; this agent sends nothing."""


class CommandGate(Protocol):
    async def release(self, operation_id: str, within: float) -> bool:
        """Stop taking commands and let those in flight (but ``operation_id``) finish;
        False if some are still running after ``within`` seconds."""

    async def resume(self) -> None:
        """Take the host's commands again."""


def successor_config(
    mine: dict[str, Any], image: str, operation_id: str, image_env: set[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """This agent's container, from ``image``, in handoff mode under the guard: every
    host setting of its own (mounts, network, user, groups, capabilities, logging) and
    its own variables; of those its old image brought (``image_env``) only the FLEET_
    ones, which install may have set to the same value: the new image has its own."""
    config, host = mine["Config"], mine["HostConfig"]
    env = [
        e
        for e in config.get("Env") or ()
        if (e.startswith("FLEET_") or e not in image_env) and not e.startswith("FLEET_HANDOFF=")
    ]
    successor = {
        "Image": image,
        "Env": [*env, f"FLEET_HANDOFF={operation_id}"],
        "Labels": config.get("Labels") or {},
        "Entrypoint": ["fleet-agent-guard"],
        "Cmd": config.get("Cmd"),
        "StopSignal": config.get("StopSignal"),
        "User": config.get("User") or "",
    }
    # Until the old agent lets go, the guard, not the engine, decides what restarts.
    host_config = {**host, "RestartPolicy": {"Name": "no"}, "AutoRemove": False}
    return successor, host_config


class Predecessor:
    def __init__(
        self,
        settings: Callable[[], AgentSettings],
        runtime: DockerRuntime,
        notes: HandoffNotes,
        gate: CommandGate,
    ) -> None:
        self._settings, self._runtime, self._notes, self._gate = settings, runtime, notes, gate

    async def apply(self, operation_id: str, spec: ServiceSpec, emit: Emit) -> OperationResult:
        """Hand over to ``spec.image``; raises HandedOver once the successor holds the host."""
        me = self._settings().agent_container
        mine = await self._runtime.inspect_container(me) if me else None
        if me is None or mine is None:
            why = "this agent does not run in a container of its own (fleet-agent install)"
            return self._result(OperationOutcome.FAILED, Reason(code="not_in_container", text=why))
        live = self._notes.read(REQUEST)
        if live is not None and not self._notes.has(DONE) and await self._still_going_on(live):
            raise CommandRefused(
                "busy", f"the agent upgrade {live.get('operation_id')} is still going on"
            )
        successor = f"{me}.next"
        await self._runtime.remove(successor, volumes=True)  # left by an earlier attempt
        self._notes.clear()
        healthy = spec.health.min_healthy_time if spec.health else 10.0
        # Probation, from taking over: healthy for min_healthy_time within this.
        probation = spec.health.healthy_deadline if spec.health else 60.0
        request = dict(
            operation_id=operation_id, previous=me, successor=successor,
            spec=spec.model_dump(mode="json"), min_healthy_time=healthy,
            healthy_deadline=probation, ready_deadline=ready_deadline(spec),
        )  # fmt: skip
        self._notes.write(REQUEST, **request)
        image = parse_image_reference(spec.image).local
        old_image = await self._runtime.inspect_image(str(mine["Image"]))
        image_env = set((old_image or {}).get("Config", {}).get("Env") or ())
        config, host_config = successor_config(mine, image, operation_id, image_env)
        # Watched by its id from here on: it takes this agent's name when it takes over.
        successor_id = await self._runtime.create_container(successor, config, host_config)
        # Both containers by id too: names move during the handoff (fallback.py).
        self._notes.write(
            REQUEST, **request, previous_id=str(mine["Id"]), successor_id=successor_id
        )
        await self._runtime.start(successor_id)
        await emit(UpdatePhase.STARTING_NEW, f"successor {successor} started from {spec.image}")
        deadline = time.monotonic() + ready_deadline(spec)
        own = (str(mine["Id"]), me)
        if not await self._wait_for(READY, successor_id, deadline):
            return await self._give_up(successor_id, own, "successor_not_ready", deadline)
        ready = self._notes.read(READY) or {}
        await emit(UpdatePhase.PROBING, f"successor ready (fleet-agent {ready.get('version')})")
        try:
            # The successor waits for the release as long as the ready deadline.
            drained = await self._gate.release(operation_id, max(0.0, deadline - time.monotonic()))
            if not drained:
                return await self._give_up(successor_id, own, "commands_in_flight", deadline)
            self._notes.write(RELEASED, at=time.time())
            taken = await self._wait_for(TAKEN, successor_id, time.monotonic() + READY_DEADLINE)
            if not taken:
                return await self._give_up(
                    successor_id, own, "successor_did_not_take_over", deadline
                )
        except BaseException:
            await self._gate.resume()  # whatever went wrong, this agent serves on
            raise
        raise HandedOver(operation_id)

    async def _still_going_on(self, request: dict[str, Any]) -> bool:
        """A handoff in the notes is going on while its successor runs, or while the old
        agent's container is set aside (a successor on probation). Otherwise it died with
        the agent that asked for it (killed before the successor took over, say): its
        notes are stale, and a new upgrade may start."""
        for name in (str(request.get("successor")), f"{request.get('previous')}.previous"):
            found = await self._runtime.inspect_container(name)
            if found is not None and (found["State"]["Running"] or name.endswith(".previous")):
                return True
        return False

    async def _wait_for(self, note: str, successor: str, deadline: float) -> bool:
        """Until the successor writes ``note``; False if it stopped or the time is up."""
        while time.monotonic() < deadline:
            if self._notes.has(note):
                return True
            found = await self._runtime.inspect_container(successor)
            # Restarted by the engine (its policy is set once this agent let go): it died.
            if found is None or not found["State"]["Running"] or found.get("RestartCount"):
                return self._notes.has(note)
            await asyncio.sleep(POLL)
        return False

    async def _give_up(
        self, successor: str, own: tuple[str, str], code: str, deadline: float
    ) -> OperationResult:
        """Remove the successor and serve on, under this agent's own name; called with the
        host's commands released, it takes them back."""
        try:
            tail = await self._runtime.logs_tail(successor, LOG_TAIL)
        except RuntimeFault:
            tail = []
        await self._runtime.remove(successor, volumes=True)  # first: it cannot take over now
        if self._notes.has(TAKEN):  # it did, just before: it failed as it took over
            code = "successor_failed"
        # A successor that died after its renames left this container under the name
        # for the old one: it gets its own name back.
        own_id, own_name = own
        current = await self._runtime.inspect_container(own_id)
        if current is not None and str(current["Name"]).lstrip("/") != own_name:
            await self._runtime.rename(own_id, own_name)
        self._notes.clear()
        await self._gate.resume()
        late = time.monotonic() >= deadline
        reason = Reason(code=code, text=f"{GIVE_UP_TEXT[code, late]}; this agent keeps serving")
        return self._result(OperationOutcome.ROLLED_BACK, reason, tail)

    def _result(
        self, outcome: OperationOutcome, reason: Reason, tail: list[str] | None = None
    ) -> OperationResult:
        status = ServiceStatus(
            name=AGENT_SERVICE, state=ContainerState.RUNNING, health=Health.HEALTHY
        )
        lines = tuple(line[:2000] for line in tail or ())
        bundle = FailureBundle(reason=reason, last_log_lines=lines)
        return OperationResult(outcome, status, failure=bundle, reasons=[reason])
