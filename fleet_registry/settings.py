"""The registry settings the agent and the controller both read."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from fleet_registry.client import RegistryAccess
from fleet_registry.credentials import RegistryCredential


class RegistrySettings(BaseModel):
    """How to reach registries, and which ones images may come from."""

    registry_credentials: dict[str, RegistryCredential] = Field(default_factory=dict)
    """Registry logins, by registry (host[:port]): JSON {"reg": {"username", "password"}}."""
    insecure_registries: tuple[str, ...] = ()
    """Registries reached over plain HTTP."""
    loopback_registries_insecure: bool = True
    """As in Docker: a registry on 127.0.0.0/8 or localhost is reached over plain HTTP."""
    registry_timeout: Annotated[float, Field(gt=0)] = 10.0
    allowed_registries: tuple[str, ...] = ()
    """When set, only images from these registries (host[:port]) are checked, pulled,
    run or rolled out; anything else is refused with `registry_not_allowed`. Empty
    allows any."""

    def registry_access(self) -> RegistryAccess:
        return RegistryAccess(
            credentials=self.registry_credentials,
            insecure=self.insecure_registries,
            loopback_insecure=self.loopback_registries_insecure,
            timeout=self.registry_timeout,
        )
