"""Events: host facts, update and config progress, container events, rollout events and
colour switches, published to the events stream."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from protocol.app import MemberName
from protocol.base import HostId, ImageRefText, MessageId, ServiceName, Token
from protocol.config_files import ConfigName, Sha256
from protocol.envelope import Envelope, ShortText
from protocol.replies import FailureBundle, Health, HookResult, ServiceStatus
from protocol.spec import Colour, ReloadPolicy


class HostFacts(Envelope):
    """The heartbeat: what a host is and runs, refreshed into KV fleet_hosts."""

    kind: Literal["host_facts"] = "host_facts"
    host: HostId
    labels: dict[str, str] = Field(default_factory=dict)
    agent_version: str
    docker_version: str | None = None
    engine_down: bool = False
    """The engine did not answer for this heartbeat: services are as last seen, and the
    host is out of every rollout until it is back."""
    cpus: Annotated[int, Field(ge=0)]
    memory_total: Annotated[int, Field(ge=0)]
    memory_available: Annotated[int, Field(ge=0)]
    disk_total: Annotated[int, Field(ge=0)]
    disk_free: Annotated[int, Field(ge=0)]
    services: tuple[ServiceStatus, ...] = ()


class UpdatePhase(StrEnum):
    """The phases of one host's update (DESIGN.md, "One host's update")."""

    CHECKING = "checking"
    PULLING = "pulling"
    READY = "ready"
    NOT_READY = "not_ready"
    SNAPSHOTTING = "snapshotting"
    STOPPING_OLD = "stopping_old"
    STARTING_NEW = "starting_new"
    PROBING = "probing"
    SOAKING = "soaking"
    DONE = "done"
    RESTORING = "restoring"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class UpdateProgress(Envelope):
    kind: Literal["update_progress"] = "update_progress"
    host: HostId
    service: ServiceName
    operation_id: MessageId
    """The id of the command driving this update."""
    rollout_id: str | None = None
    phase: UpdatePhase
    detail: ShortText = ""
    progress: Annotated[float, Field(ge=0, le=1)] | None = None
    image: ImageRefText | None = None


class ConfigPhase(StrEnum):
    RELOADING = "reloading"
    """The new file is written and the reload policy is being applied and verified."""
    APPLIED = "applied"
    ROLLED_BACK = "rolled_back"
    """Verification failed: the previous file is back (and reloaded)."""
    FAILED = "failed"
    """The change could not be read or written; nothing was reloaded."""


class ConfigProgress(Envelope):
    """A config file change on one host, published as ``config_<phase>``."""

    kind: Literal["config_progress"] = "config_progress"
    host: HostId
    service: ServiceName
    name: ConfigName
    version: Annotated[int, Field(ge=0)]
    sha256: Sha256 | None = None
    """Of the content the change is about (None: the file is removed)."""
    phase: ConfigPhase
    policy: ReloadPolicy
    detail: ShortText = ""
    rollout_id: str | None = None
    failure: FailureBundle | None = None


class ContainerAction(StrEnum):
    """What the engine reported about a managed container (Docker's event actions)."""

    DIE = "die"
    OOM = "oom"
    RESTART = "restart"
    HEALTH_STATUS = "health_status"


class ContainerEvent(Envelope):
    """The engine's own news about a managed container, published as it happens."""

    kind: Literal["container_event"] = "container_event"
    host: HostId
    service: ServiceName | None = None
    """None for a container that carries no service label."""
    container: Annotated[str, Field(max_length=256)]
    container_id: Annotated[str, Field(max_length=128)]
    action: ContainerAction
    exit_code: int | None = None
    health: Health | None = None
    restarted_by_policy: bool = False
    """For a restart: the engine's restart policy did it, after the container died."""
    at: AwareDatetime


class RolloutEvent(Envelope):
    """The controller's news about a rollout: each change of status, on fleet.evt.controller."""

    kind: Literal["rollout_event"] = "rollout_event"
    rollout_id: Annotated[str, Field(max_length=128)]
    service: ServiceName
    revision: Annotated[int, Field(ge=1)]
    status: Token
    reason: Annotated[str, Field(max_length=16384)] = ""
    image: ImageRefText
    """What it rolls out: the image; an app's first member's (all are in ``members``)."""
    hosts_done: Annotated[int, Field(ge=0)] = 0
    hosts_total: Annotated[int, Field(ge=0)] = 0
    members: dict[MemberName, ImageRefText] = Field(default_factory=dict)
    """An app's: each member's image."""


class ConvergenceAction(StrEnum):
    DEPLOY = "converge_deploy"
    UPDATE = "converge_update"
    REMOVE = "converge_remove"
    DRIFT_DETECTED = "drift_detected"
    DRIFT_REPAIRED = "drift_repaired"
    FAILED = "converge_failed"
    """The host could not be converged this time; it is tried again later."""


class ConvergenceEvent(Envelope):
    """The controller brought (or will bring) a host to a service's accepted revision,
    or found it drifted; on fleet.evt.controller.convergence."""

    kind: Literal["convergence_event"] = "convergence_event"
    service: ServiceName
    host: HostId
    action: ConvergenceAction
    revision: Annotated[int, Field(ge=1)]
    reason: Annotated[str, Field(max_length=4096)] = ""
    rollout_id: Annotated[str, Field(max_length=128)] | None = None


class HookRun(Envelope):
    """A lifecycle hook ran: on fleet.evt.<host>.hook_run by the agent (pre_update,
    post_update), on fleet.evt.controller.hook_run by the controller (post_rollout)."""

    kind: Literal["hook_run"] = "hook_run"
    service: ServiceName
    host: HostId | None = None
    """None for a hook the controller ran."""
    operation_id: MessageId | None = None
    rollout_id: Annotated[str, Field(max_length=128)] | None = None
    result: HookResult


class ImagesPruned(Envelope):
    """Old images of a service an agent removed after a successful update (its image
    retention), on fleet.evt.<host>.images_pruned."""

    kind: Literal["images_pruned"] = "images_pruned"
    host: HostId
    service: ServiceName
    operation_id: MessageId | None = None
    removed: Annotated[tuple[ImageRefText, ...], Field(max_length=100)]
    """The images as the service ran them."""
    freed_bytes: Annotated[int, Field(ge=0)] = 0
    """Free space on the engine's disk that came back."""


class ColourSwitch(Envelope):
    """Blue-green: the service's active colour changed; routers and discovery follow it."""

    kind: Literal["colour_switch"] = "colour_switch"
    service: ServiceName
    colour: Colour
    port: Annotated[int, Field(ge=1, le=65535)]
    rollout_id: Annotated[str, Field(max_length=128)]
    hosts: tuple[HostId, ...] = ()
    """The hosts that serve the service in this colour now."""
