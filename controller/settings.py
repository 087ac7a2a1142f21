"""The controller's settings: flags, FLEET_* environment variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.policy_gate import load_policies
from controller.scan_gate import Scanner, Severity
from controller.vetting import Vetter
from fleet_registry.settings import RegistrySettings
from protocol.errors import ConfigurationError, summarise_invalid
from protocol.signing import CommandSigner
from protocol.streams import StreamRetention
from protocol.transport import BusClientSettings


def default_controller_id() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


class ControllerSettings(BaseSettings, BusClientSettings, RegistrySettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", frozen=True, extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    bus_user: str = "controller"
    """The name the client certificate was issued to (its reply inbox prefix)."""
    controller_id: str = Field(default_factory=default_controller_id)
    tick: Annotated[float, Field(gt=0)] = 0.5
    """Seconds between two passes over the active rollouts."""
    lease_ttl: Annotated[float, Field(gt=0)] = 10.0
    host_timeout: Annotated[float, Field(gt=0)] = 30.0
    """A host whose last heartbeat is older than this is offline."""
    prepare_timeout: Annotated[float, Field(gt=0)] = 600.0
    command_slack: Annotated[float, Field(gt=0)] = 60.0
    """Added to a service's healthy_deadline and grace period to bound an Apply."""
    command_ttl: Annotated[float, Field(gt=0)] = 900.0
    streams: StreamRetention = StreamRetention()
    """Retention and replicas of FLEET_EVENTS, FLEET_LOGS, FLEET_METRICS (FLEET_STREAMS)."""
    signing_key_file: Path | None = None
    """The controller's Ed25519 key (base64 seed, `fleetctl keys generate`): every command
    is signed with it. Agents that trust its public key refuse anything else."""

    # Image trust (checked by `fleetctl rollout start`, see controller/vetting.py), with
    # the registry settings of RegistrySettings:
    pin_digests: bool = True
    """Resolve the tag to its digest before a rollout; hosts pull exactly that."""
    scan_command: tuple[str, ...] = ()
    """A Trivy-compatible scanner, `{image}` for the image; empty: no scan gate."""
    scan_severity: Severity = "HIGH"
    """Findings at or above this severity stop a rollout."""
    scan_timeout: Annotated[float, Field(gt=0)] = 600.0
    policy_dirs: tuple[Path, ...] = ()
    """Directories of .rego policies (package fleet.policy, deny rules); empty: none."""
    allowed_capabilities: tuple[str, ...] = ("NET_BIND_SERVICE",)
    """Capabilities a spec may add, for the shipped capabilities policy."""

    def bus_options(self, url: str) -> dict[str, Any]:
        """nats.connect keyword arguments, with this party's certificate and inbox prefix."""
        return self.bus_connect_options([url], self.bus_user)

    def signer(self) -> CommandSigner | None:
        return load_signer(self.signing_key_file)

    def vetter(self) -> Vetter:
        return Vetter(
            access=self.registry_access(),
            allowed_registries=self.allowed_registries,
            pin_digests=self.pin_digests,
            scanner=Scanner(self.scan_command, self.scan_timeout) if self.scan_command else None,
            scan_threshold=self.scan_severity,
            policies=load_policies(self.policy_dirs),
            allowed_capabilities=self.allowed_capabilities,
        )


def load_settings() -> ControllerSettings:
    """The settings from FLEET_* variables; a bad value is a ConfigurationError."""
    try:
        return ControllerSettings()
    except ValidationError as exc:
        raise ConfigurationError(f"invalid FLEET_* setting: {summarise_invalid(exc)}") from exc


def load_signer(path: Path | None) -> CommandSigner | None:
    """The signer of the key in ``path``; the key itself never leaves this object."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the signing key {path}: {exc.strerror}") from exc
    return CommandSigner(text)
