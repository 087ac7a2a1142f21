"""The agent's settings: flags, FLEET_* environment variables, or a settings file."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from fleet_registry.settings import RegistrySettings
from protocol.errors import ConfigurationError
from protocol.labels import parse_labels
from protocol.signing import CommandVerifier
from protocol.streams import StreamRetention
from protocol.subjects import validate_host_id
from protocol.transport import BusClientSettings

MiB = 1024 * 1024


def default_host_id() -> str:
    return socket.gethostname().split(".")[0]


class AgentSettings(BaseSettings, BusClientSettings, RegistrySettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", frozen=True, extra="forbid")

    nats_urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    host_id: str = Field(default_factory=default_host_id)
    labels: dict[str, str] = Field(default_factory=dict)
    docker_host: str = "unix:///var/run/docker.sock"
    state_dir: Path = Path("/var/lib/fleetwave/agent")
    heartbeat_interval: Annotated[float, Field(gt=0)] = 10.0
    streams: StreamRetention = StreamRetention()
    """Retention and replicas of the streams, if this agent is the first to create them."""
    metrics_interval: Annotated[float, Field(gt=0)] = 10.0
    """Seconds between two metrics samples on fleet.metrics.<host>."""
    ship_logs: bool = True
    log_flush_interval: Annotated[float, Field(gt=0, le=60)] = 0.25
    """A log line waits at most this long for others to share its message."""
    telemetry_buffer_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * MiB
    """Logs and metrics kept while NATS is away; beyond it the oldest are dropped."""
    event_buffer_bytes: Annotated[int, Field(ge=64 * 1024)] = 2 * MiB
    """Events kept while NATS is away (drained before logs and metrics)."""
    container_prefix: str = ""
    """Prefixed to every container name, so several agents can share one engine."""
    update_lock_path: str | None = None
    """While this file exists, Apply is deferred (``{service}`` is replaced by the name)."""
    min_free_memory: int = 64 * MiB
    min_free_disk: int = 256 * MiB
    min_open_files: int = 1024
    max_load_per_cpu: float = 8.0
    docker_timeout: Annotated[float, Field(gt=0)] = 60.0
    command_workers: Annotated[int, Field(ge=1)] = 8
    pull_timeout: Annotated[float, Field(gt=0)] = 600.0
    trusted_command_keys: tuple[str, ...] = ()
    """Controller public keys (base64 Ed25519). When set, only commands signed by one of
    them, unexpired, not from the future and never seen before are run."""
    command_clock_skew: Annotated[float, Field(ge=0, le=3600)] = 30.0
    """Seconds a command's sent_at may lie ahead of this host's clock."""
    allow_host_hooks: bool = False
    """Run pre_update/post_update hooks with ``run_in = "host"`` (as the agent's user):
    off unless the host's owner says so, since a spec could otherwise run any command
    here that the policies never see."""
    agent_container: str | None = None
    """The container this agent runs in (fleet-agent install sets it): what an agent
    upgrade copies for the successor."""
    handoff: str | None = None
    """Set on a successor by an agent upgrade (its operation id): take the host over from
    the running agent instead of starting as a fresh agent."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    failpoint: str | None = None
    """Tests only: SIGKILL the agent right after journaling this update phase."""

    def bus_options(self) -> dict[str, Any]:
        """nats.connect keyword arguments, with this host's certificate and inbox prefix."""
        return self.bus_connect_options(self.nats_urls, self.host_id)

    @field_validator("host_id")
    @classmethod
    def _host_id_is_a_token(cls, value: str) -> str:
        try:
            return validate_host_id(value)
        except Exception as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("trusted_command_keys")
    @classmethod
    def _keys_are_ed25519(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            CommandVerifier(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from exc
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_text(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return parse_labels(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from exc

    def container_name(self, service: str) -> str:
        return f"{self.container_prefix}{service}"


RELOADABLE = frozenset(
    {"labels", "heartbeat_interval", "metrics_interval", "log_flush_interval", "log_level"}
)
"""Settings a running agent takes on SIGHUP; the others need a restart."""


def reloaded(current: AgentSettings, fresh: AgentSettings) -> tuple[AgentSettings, list[str]]:
    """``current`` with ``fresh``'s reloadable values, and the other fields that changed."""
    changed = [
        name
        for name in AgentSettings.model_fields
        if getattr(current, name) != getattr(fresh, name)
    ]
    taken = {name: getattr(fresh, name) for name in changed if name in RELOADABLE}
    return current.model_copy(update=taken), [n for n in changed if n not in RELOADABLE]


def load_agent_settings(config_file: Path | None = None, **flags: object) -> AgentSettings:
    """Settings from flags, then FLEET_* variables, then the TOML ``config_file``, then defaults.

    Raises pydantic's ValidationError (the CLI prints it), or OSError for an unreadable file.
    """
    if config_file is None:
        return AgentSettings(**flags)  # type: ignore[arg-type]
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")

    class FileBackedSettings(AgentSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=config_file),
            )

    return FileBackedSettings(**flags)  # type: ignore[arg-type]
