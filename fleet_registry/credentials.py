"""Registry credentials: the password is a SecretStr, read in exactly two places."""

from __future__ import annotations

from pydantic import SecretStr

from protocol.base import FrozenModel


class RegistryCredential(FrozenModel):
    username: str
    password: SecretStr

    def docker_auth(self) -> dict[str, str]:
        """The auth_config the engine takes for a pull."""
        return {"username": self.username, "password": self.password.get_secret_value()}

    def basic_pair(self) -> str:
        """``user:password`` for HTTP basic auth with the registry or its token service."""
        return f"{self.username}:{self.password.get_secret_value()}"
