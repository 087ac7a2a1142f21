"""The controller's settings: flags, FLEET_* environment variables."""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from controller.gates.policy import load_policies
from controller.gates.scan import Scanner, Severity
from controller.gates.vetting import Vetter
from fleet_registry.settings import RegistrySettings
from protocol.errors import MAX_ERRORS_IN_MESSAGE, ConfigurationError
from protocol.signing import CommandSigner
from protocol.streams import StreamRetention
from protocol.transport import BusClientSettings

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
FLAGS = {"nats_urls": "--nats", "controller_id": "--id", "nats_insecure": "--insecure"}
"""Settings whose `fleetctl controller run` flag is not named after the field."""


def default_controller_id() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


class ControllerSettings(BaseSettings, BusClientSettings, RegistrySettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", frozen=True, extra="ignore")

    # NoDecode: a comma list is not JSON; parse_nats_urls reads both.
    nats_urls: Annotated[tuple[str, ...] | None, NoDecode] = None
    """Every server of the bus (--nats, FLEET_NATS_URLS); the client fails over."""
    nats_url: Annotated[tuple[str, ...] | None, NoDecode] = None
    """FLEET_NATS_URL, read when FLEET_NATS_URLS is not set: one URL or a comma list."""
    bus_user: str = "controller"
    """The name the client certificate was issued to (its reply inbox prefix)."""
    controller_id: str = Field(default_factory=default_controller_id)
    tick: Annotated[float, Field(gt=0)] = 0.5
    """Seconds between two passes over the active rollouts."""
    converge_interval: Annotated[float, Field(ge=0)] = 2.0
    allow_hooks: bool = False
    """Run specs' post_rollout hooks on this controller's host: off unless its owner says
    so (FLEET_ALLOW_HOOKS), since the controller holds the signing key."""
    """Seconds between two convergence passes over the declared services; 0 turns
    convergence off (hosts then change only in the rollouts operators start)."""
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

    # Image trust (checked by `fleetctl rollout start`, see controller/gates/vetting.py), with
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

    @field_validator("nats_urls", "nats_url", mode="before")
    @classmethod
    def _nats_urls(cls, value: object) -> tuple[str, ...] | None:
        return None if value is None else parse_nats_urls(value)

    @property
    def servers(self) -> tuple[str, ...]:
        """The NATS URLs to connect to, from the flag or the variables."""
        return self.nats_urls or self.nats_url or (DEFAULT_NATS_URL,)

    def bus_options(self) -> dict[str, Any]:
        """nats.connect keyword arguments, with this party's certificate and inbox prefix."""
        return self.bus_connect_options(self.servers, self.bus_user)

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


def parse_nats_urls(value: object) -> tuple[str, ...]:
    """``--nats`` values, FLEET_NATS_URLS or FLEET_NATS_URL: a JSON list (as the agent's
    FLEET_NATS_URLS), or URLs separated by commas.

    Errors never quote a URL: one may carry a user and password.
    """
    items: object = value
    if isinstance(value, str):
        try:
            items = json.loads(value) if value.lstrip().startswith("[") else [value]
        except ValueError:
            raise ValueError("not a JSON list of URLs") from None
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("give NATS URLs as a JSON list of strings or a comma list")
    urls = tuple(part.strip() for item in items for part in item.split(",") if part.strip())
    if not urls:
        raise ValueError("give at least one NATS URL")
    for url in urls:
        parts = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        try:
            _ = parts.port  # a port that is not a number raises here
        except ValueError:
            raise ValueError("a URL has a port that is not a number") from None
        if parts.scheme not in NATS_SCHEMES or not parts.hostname:
            raise ValueError("each URL must look like nats://host:4222 (or tls, ws, wss)")
    if len({urllib.parse.urlsplit(u).scheme in ("ws", "wss") for u in urls}) > 1:
        raise ValueError("websocket (ws, wss) and nats/tls URLs cannot be mixed")
    return urls


def load_settings(**flags: Any) -> ControllerSettings:
    """The settings from ``flags`` (by field name; None is not given) over FLEET_* variables.

    A bad value is a ConfigurationError naming its flag or variable, never the value.
    """
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return ControllerSettings(**given)
    except ValidationError as exc:
        raise ConfigurationError(describe_invalid(exc, lambda f: setting_name(f, given))) from exc
    except SettingsError as exc:
        # pydantic-settings could not decode a JSON variable; it names only the field.
        field = re.search(r'field "(\w+)"', str(exc))
        name = setting_name(field.group(1), given) if field else "a FLEET_* variable"
        raise ConfigurationError(f"{name}: not valid JSON") from exc


def setting_name(field: str, flags: Mapping[str, object]) -> str:
    """What an operator set: the flag if one was given, else the FLEET_ variable."""
    if field in flags:
        return FLAGS.get(field, "--" + field.replace("_", "-"))
    return f"FLEET_{field.upper()}"


def describe_invalid(exc: ValidationError, name: Callable[[str], str]) -> str:
    """One line: each bad field by ``name`` (a flag, a variable) and why, without values.

    pydantic's own text quotes the input (a password, a key) and links to its docs.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:MAX_ERRORS_IN_MESSAGE]:
        field, *inner = [str(part) for part in error["loc"]] or ["input"]
        where = name(field) + "".join(f"[{part}]" for part in inner)
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    if len(errors) > MAX_ERRORS_IN_MESSAGE:
        parts.append(f"and {len(errors) - MAX_ERRORS_IN_MESSAGE} more")
    return "; ".join(parts)


def load_signer(path: Path | None) -> CommandSigner | None:
    """The signer of the key in ``path``; the key itself never leaves this object."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the signing key {path}: {exc.strerror}") from exc
    return CommandSigner(text)
