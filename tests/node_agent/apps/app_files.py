"""The Compose file the app tests deploy: a web member that waits for a healthy cache and
for a one-shot migration to complete (the issue's three-member app; the migration has
Compose's default restart policy, no). Network mode none: no bridge networks on the
shared engine."""

from __future__ import annotations

from pathlib import Path

from controller.compose.project import compose_app
from fleet_lab.stack import LocalStack
from protocol.app import AppSpec, Member

APP_FILE = """\
services:
  migrate:
    image: ${REGISTRY}/demo/web:${MIGRATE_TAG:-1.0.0}
    network_mode: none
    entrypoint: ["sh", "-c", "echo migrated; sleep ${MIGRATE_SECONDS:-0}; exit ${MIGRATE_EXIT:-0}"]
  cache:
    image: ${REGISTRY}/demo/web:${CACHE_TAG:-1.0.0}
    network_mode: none
    healthcheck:
      test: wget -q -O /dev/null http://127.0.0.1:8080/health
      interval: 1s
      timeout: 2s
      retries: 2
  web:
    image: ${REGISTRY}/demo/web:${WEB_TAG:-1.0.0}
    network_mode: none
    depends_on:
      cache:
        condition: service_healthy
        restart: ${WEB_RESTART:-false}
      migrate:
        condition: service_completed_successfully
    logging:
      driver: ${WEB_LOG_DRIVER:-json-file}
"""


def demo_app(tmp_path: Path, stack: LocalStack, name: str, **tags: str) -> AppSpec:
    """The app with ``tags`` (MIGRATE_TAG, CACHE_TAG, WEB_TAG, MIGRATE_EXIT,
    MIGRATE_SECONDS, WEB_RESTART: web's depends_on.cache.restart) set; a probed
    member proves healthy in 1 s instead of 5, to keep the tests short."""
    path = tmp_path / "compose.yaml"
    path.write_text(APP_FILE)
    app = compose_app(path, name, {"REGISTRY": stack.registry, **tags}).app
    return app.model_copy(update={"members": tuple(_quick(member) for member in app.members)})


def _quick(member: Member) -> Member:
    health = member.spec.health
    if health is None:
        return member
    spec = member.spec.model_copy(
        update={"health": health.model_copy(update={"min_healthy_time": 1.0})}
    )
    return member.model_copy(update={"spec": spec})
