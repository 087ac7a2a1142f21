"""The agent commands a rollout sends, built from its record: one place for both senders.

The executor sends them for real; fleetctl's dry run sends the same Prepare.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from controller.rollouts.model import HostPhase, RolloutRecord
from controller.rollouts.workload import with_members
from protocol import subjects
from protocol.app import AppSpec
from protocol.models import (
    ApplyAppCommand,
    ApplyCommand,
    Command,
    ConfigCommand,
    PrepareAppCommand,
    PrepareCommand,
    RemoveCommand,
    RetireCommand,
    StageCommand,
    SwitchCommand,
    new_message_id,
)
from protocol.spec import ServiceSpec, coloured, other_colour


def pinned(spec: ServiceSpec, digest: str | None, min_healthy_time: float | None) -> ServiceSpec:
    """The spec as sent to a host: the image pinned to the digest that host pulled."""
    changes: dict[str, object] = {}
    if digest and "@" not in spec.image:
        changes["image"] = f"{spec.image}@{digest}"
    if min_healthy_time is not None and spec.health is not None:
        deadline = max(spec.health.healthy_deadline, min_healthy_time + spec.health.initial_delay)
        changes["health"] = spec.health.model_copy(
            update={"min_healthy_time": min_healthy_time, "healthy_deadline": deadline}
        )
    return spec.model_copy(update=changes) if changes else spec


def addressed(
    host: str, expires_at: datetime, command_id: str, rollout_id: str | None
) -> dict[str, Any]:
    """What every command the controller sends to ``host`` carries."""
    return {
        "id": command_id,
        "sender": subjects.CONTROLLER_SENDER,
        "host": host,
        "expires_at": expires_at,
        "rollout_id": rollout_id,
    }


def prepare_command(
    record: RolloutRecord,
    host: str,
    expires_at: datetime,
    command_id: str | None = None,
    rollout_id: str | None = None,
) -> PrepareCommand | PrepareAppCommand:
    common = {
        **addressed(host, expires_at, command_id or new_message_id(), rollout_id),
        "allow_downgrade": record.spec.allow_downgrade,
        "allow_major": record.spec.allow_major,
    }
    if isinstance(record.target, AppSpec):
        return PrepareAppCommand(app=record.target, **common)
    return PrepareCommand(service=record.target, **common)


def without_pre_update(spec: ServiceSpec) -> ServiceSpec:
    """The spec a revert applies: its pre_update hook would run in the new version's
    container, maybe the very one being reverted, and could refuse the way back."""
    if spec.hooks.pre_update is None:
        return spec
    return spec.model_copy(update={"hooks": spec.hooks.model_copy(update={"pre_update": None})})


def pinned_app(app: AppSpec, digests: Mapping[str, str], min_healthy_time: float | None) -> AppSpec:
    """The app as sent to a host: each member pinned to the digest that host pulled."""
    return with_members(
        app, lambda member: pinned(member.spec, digests.get(member.name), min_healthy_time)
    )


def reverting_app(app: AppSpec) -> AppSpec:
    """The app a revert applies: no member's pre_update hook may refuse the way back."""
    return with_members(app, lambda member: without_pre_update(member.spec))


def apply_app_command(
    record: RolloutRecord, host: str, app: AppSpec, expires_at: datetime, command_id: str
) -> ApplyAppCommand:
    return ApplyAppCommand(app=app, **addressed(host, expires_at, command_id, record.id))


def in_colour(record: RolloutRecord, spec: ServiceSpec) -> ServiceSpec:
    """The spec as a host of the rollout runs it: in the colour that serves, if any."""
    if record.in_colour is None or spec.blue_green is None:
        return spec
    return coloured(spec, record.in_colour)


def apply_command(
    record: RolloutRecord, host: str, spec: ServiceSpec, expires_at: datetime, command_id: str
) -> ApplyCommand:
    return ApplyCommand(
        service=in_colour(record, spec), **addressed(host, expires_at, command_id, record.id)
    )


def remove_command(
    record: RolloutRecord, host: str, expires_at: datetime, command_id: str
) -> RemoveCommand:
    return RemoveCommand(
        service=record.service, **addressed(host, expires_at, command_id, record.id)
    )


def blue_green_command(
    record: RolloutRecord, host: str, spec: ServiceSpec, expires_at: datetime, command_id: str
) -> Command:
    """The command of a blue-green host's current phase: stage, switch, retire or undo."""
    entry = record.hosts[host]
    new = record.new_colour
    common = addressed(host, expires_at, command_id, record.id)
    if entry.phase is HostPhase.UPDATING:
        return StageCommand(service=spec, colour=new, **common)
    if entry.phase is HostPhase.SWITCHING:
        return SwitchCommand(service=record.service, colour=new, **common)
    if entry.phase is HostPhase.RETIRING:
        return RetireCommand(service=record.service, colour=other_colour(new), **common)
    if entry.phase is HostPhase.REVERTING and entry.switched:
        return SwitchCommand(
            service=record.service, colour=other_colour(new), remove_other=True, **common
        )
    if entry.phase is HostPhase.REVERTING:
        return RetireCommand(service=record.service, colour=new, **common)
    raise ValueError(f"no blue-green command for a host that is {entry.phase.value}")


def config_command(
    record: RolloutRecord,
    host: str,
    labels: dict[str, str],
    expires_at: datetime,
    command_id: str,
) -> ConfigCommand:
    """A config rollout's command for a host's phase: check, write the new file, or revert."""
    assert record.config is not None, "not a config rollout"
    phase = record.hosts[host].phase
    version, content = record.config.content_for(
        host, labels, reverting=phase is HostPhase.REVERTING
    )
    return ConfigCommand(
        service=record.service,
        name=record.config.name,
        version=version,
        content=content,
        check_only=phase is HostPhase.PREPARING,
        **addressed(host, expires_at, command_id, record.id),
    )
