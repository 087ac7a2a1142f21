"""The settings of the local stack that deploy/local/stack.sh brought up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STACK_DIR = "/var/lib/fleetwave/stack"


@dataclass(frozen=True)
class LocalStack:
    docker_host: str
    registry: str
    auth_registry: str
    auth_user: str
    auth_password: str
    demo_repository: str
    demo_tags: tuple[str, ...]

    def demo_image(self, tag: str, *, registry: str | None = None) -> str:
        return f"{registry or self.registry}/{self.demo_repository}:{tag}"


def load_local_stack() -> LocalStack:
    stack_dir = Path(os.environ.get("FLEET_STACK_DIR", DEFAULT_STACK_DIR))
    env_file = stack_dir / "stack.env"
    if not env_file.is_file():
        raise RuntimeError(
            f"{env_file} is missing: bring the local stack up with `deploy/local/stack.sh up` "
            "(make test does this)"
        )
    # The file is also sourced by shells, so a value with spaces is double-quoted.
    values = {
        key: value.strip('"')
        for key, value in (
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
        )
    }
    return LocalStack(
        docker_host=values["FLEET_DOCKER_HOST"],
        registry=values["FLEET_REGISTRY"],
        auth_registry=values["FLEET_AUTH_REGISTRY"],
        auth_user=values["FLEET_AUTH_REGISTRY_USER"],
        auth_password=Path(values["FLEET_AUTH_REGISTRY_PASSWORD_FILE"]).read_text().strip(),
        demo_repository=values["FLEET_DEMO_REPOSITORY"],
        demo_tags=tuple(values["FLEET_DEMO_TAGS"].split()),
    )
