"""The controller's settings: flags, FLEET_* environment variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.errors import ConfigurationError
from protocol.signing import CommandSigner
from protocol.streams import StreamRetention


def default_controller_id() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


class ControllerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", frozen=True, extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
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

    def signer(self) -> CommandSigner | None:
        return load_signer(self.signing_key_file)


def load_signer(path: Path | None) -> CommandSigner | None:
    """The signer of the key in ``path``; the key itself never leaves this object."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the signing key {path}: {exc.strerror}") from exc
    return CommandSigner(text)
