"""Commands, controller to agent: each adds the host it is for, an expiry and room for
a signature to the envelope."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from protocol.app import AppSpec
from protocol.base import HostId, ServiceName
from protocol.config_files import ConfigContent, ConfigName
from protocol.envelope import Envelope
from protocol.spec import Colour, ServiceSpec


class Command(Envelope):
    host: HostId
    """The host this command is for; an agent refuses one addressed to another host."""
    expires_at: AwareDatetime
    key_id: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")] | None = None
    """Which controller key signed it (protocol/signing.py); None when unsigned."""
    signature: Annotated[bytes, Field(min_length=64, max_length=64)] | None = None
    """Ed25519 over every other field; agents that trust keys refuse a command without."""


# ---- commands: controller -> agent (request/reply on fleet.cmd.<host>) ----


class PrepareCommand(Command):
    """Phase 1: check the host and pull the image; touches nothing running."""

    kind: Literal["prepare"] = "prepare"
    service: ServiceSpec
    allow_downgrade: bool = False
    allow_major: bool = False
    rollout_id: str | None = None


class ApplyCommand(Command):
    """Phase 2: replace the service's container with the prepared image."""

    kind: Literal["apply"] = "apply"
    service: ServiceSpec
    force: bool = False
    """Apply even while the application holds its update lock."""
    rollout_id: str | None = None


class PrepareAppCommand(Command):
    """Phase 1 for an app: check the host and pull every changed member's image, by
    digest; touches nothing running. Ready only when every member is."""

    kind: Literal["prepare_app"] = "prepare_app"
    app: AppSpec
    allow_downgrade: bool = False
    allow_major: bool = False
    rollout_id: str | None = None


class ApplyAppCommand(Command):
    """Update an app's members as one unit (node_agent/apps/group.py)."""

    kind: Literal["apply_app"] = "apply_app"
    app: AppSpec
    force: bool = False
    """Apply even while the application holds its update lock."""
    rollout_id: str | None = None


class RollbackCommand(Command):
    """Return the service to the previous version the agent recorded."""

    kind: Literal["rollback"] = "rollback"
    service: ServiceName
    force: bool = False
    rollout_id: str | None = None


class RemoveCommand(Command):
    """Stop and remove every copy of the service and forget it (off its selector, or
    deleted). Already gone is done."""

    kind: Literal["remove"] = "remove"
    service: ServiceName
    rollout_id: str | None = None


class StageCommand(Command):
    """Blue-green: start ``colour`` with the new spec next to the serving copy, verify it."""

    kind: Literal["stage"] = "stage"
    service: ServiceSpec
    colour: Colour
    rollout_id: str | None = None


class SwitchCommand(Command):
    """Blue-green: make ``colour`` the serving copy and run the switch hook.

    The other colour keeps running (a switch back takes seconds) unless ``remove_other``.
    """

    kind: Literal["switch"] = "switch"
    service: ServiceName
    colour: Colour
    remove_other: bool = False
    rollout_id: str | None = None


class RetireCommand(Command):
    """Blue-green: stop and remove the copy of ``colour``; never the serving one."""

    kind: Literal["retire"] = "retire"
    service: ServiceName
    colour: Colour
    rollout_id: str | None = None


class ConfigCommand(Command):
    """A config rollout's step on one host: write one file, apply the reload policy, verify.

    On a failed verification the agent restores the previous file itself. ``check_only``
    is the rollout's pre-flight: can the file be written, does the service run here.
    ``content`` None removes the file (reverting a file's first version).
    """

    kind: Literal["config"] = "config"
    service: ServiceName
    name: ConfigName
    version: Annotated[int, Field(ge=0)]
    content: ConfigContent | None
    check_only: bool = False
    rollout_id: str | None = None


class InspectCommand(Command):
    kind: Literal["inspect"] = "inspect"
    service: ServiceName


# ---- pieces shared by replies and events ----
