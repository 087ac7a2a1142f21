"""An app: several containers a host runs and updates as one unit (a Compose project).

Each member is a service spec of its own (its container is named ``<app>-<member>``),
with what it waits for before it starts: the members it depends on, started, healthy or
completed successfully. The app's volumes and networks are created on each host if they
are missing and never removed by an update.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from protocol.base import FrozenModel, ServiceName
from protocol.spec import ServiceSpec

MemberName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]
DEPENDENCY_DEADLINE = 120.0
"""Seconds a member waits for a dependency's condition, unless the dependency's own
health check gives a longer deadline (the controller's command timeouts count on it)."""


class Condition(StrEnum):
    STARTED = "service_started"
    HEALTHY = "service_healthy"
    COMPLETED = "service_completed_successfully"


class Dependency(FrozenModel):
    member: MemberName
    condition: Condition = Condition.STARTED
    restart: bool = False
    """Restart this member when that one is replaced (Compose's ``restart: true``)."""
    required: bool = True


class Member(FrozenModel):
    name: MemberName
    spec: ServiceSpec
    depends_on: tuple[Dependency, ...] = ()

    @property
    def awaited_for(self) -> float:
        """Seconds a member depending on this one waits for its condition."""
        health = self.spec.health
        return max(DEPENDENCY_DEADLINE, health.healthy_deadline if health else 0.0)

    @property
    def may_exit(self) -> bool:
        """Its container may end, done: its restart policy does not restart it after a
        clean exit (Compose's default, no): a one-shot job such as a migration."""
        policy = self.spec.container.restart_policy
        return policy is None or policy.name in ("no", "on-failure")


class EngineObject(FrozenModel):
    """A volume or a network the app's members share, made by the agent if missing."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """As the engine knows it: ``<app>_<name>``, or the name the file gave."""
    driver: str | None = None
    driver_opts: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    external: bool = False
    """Made by someone else: must exist, never created."""


class NamedVolume(EngineObject):
    """A named volume: its data outlives every container that mounts it."""


class NamedNetwork(EngineObject):
    internal: bool = False
    """No way out of the network but to its other members."""


class AppSpec(FrozenModel):
    name: ServiceName
    members: Annotated[tuple[Member, ...], Field(min_length=1)]
    volumes: tuple[NamedVolume, ...] = ()
    networks: tuple[NamedNetwork, ...] = ()

    @model_validator(mode="after")
    def _dependencies_are_members_without_cycles(self) -> Self:
        names = [member.name for member in self.members]
        if len(set(names)) != len(names):
            raise ValueError("member names must be unique")
        for member in self.members:
            for dependency in member.depends_on:
                if dependency.member not in names:
                    raise ValueError(f"{member.name} depends on {dependency.member}: not a member")
        start_order(self)  # raises on a cycle
        return self

    def member(self, name: str) -> Member:
        return next(member for member in self.members if member.name == name)


def one_shots(app: AppSpec) -> set[str]:
    """Members that may end, done: their restart policy lets them (Compose's default
    ``no``, or ``on-failure``) and nothing checks their health (a job, not a server), or
    another member waits for them to complete. One that exited with 0 is done; any
    other member stopped is down."""
    awaited = {
        d.member for m in app.members for d in m.depends_on if d.condition is Condition.COMPLETED
    }
    return {
        m.name for m in app.members if m.may_exit and (m.spec.health is None or m.name in awaited)
    }


def start_order(app: AppSpec) -> list[str]:
    """Members in an order where each comes after everything it depends on; among those
    free to go, the order of the file. ValueError on a cycle."""
    waiting = {m.name: {d.member for d in m.depends_on} for m in app.members}
    order: list[str] = []
    while waiting:
        ready = [name for name, needs in waiting.items() if needs <= set(order)]
        if not ready:
            raise ValueError(f"members depend on each other in a cycle: {', '.join(waiting)}")
        order.append(ready[0])
        del waiting[ready[0]]
    return order
