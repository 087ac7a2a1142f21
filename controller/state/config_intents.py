"""What ``fleetctl config`` does: set files in KV, and start paced config rollouts.

``config set`` changes KV fleet_config at once, and every agent watching it applies the
change right away (each one verifying and undoing it on its own host). ``config
rollout`` instead goes host by host through the planner, within max_unavailable, with
canary, pause, promote, abort and revert, and stores the version when it completes.
"""

from __future__ import annotations

from controller.rollouts.model import (
    ConfigTarget,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    Strategy,
    config_rollout_id,
)
from controller.state.config_store import StoredConfig
from controller.state.intents import Fleet
from controller.state.rollout_encoding import encode_record
from controller.state.store import RolloutConflict
from protocol.app import AppSpec
from protocol.config_files import ConfigContent, first_document
from protocol.errors import ConfigurationError
from protocol.models import HostFacts, utc_now
from protocol.spec import ServiceSpec

MAX_CONFIG_ROLLOUT_RECORD = 900 * 1024
"""A rollout record carries both versions of the file; NATS refuses messages of 1 MiB."""


async def _refuse_during_config_rollout(fleet: Fleet, service: str, name: str) -> None:
    active = await fleet.rollouts.active_id(service)
    stored = await fleet.rollouts.get(active) if active else None
    if stored is not None and stored.record.config and stored.record.config.name == name:
        raise RolloutConflict(
            f"config rollout {stored.record.id} of {service}/{name} is in progress; "
            "wait for it, or abort it first"
        )


async def set_config(
    fleet: Fleet,
    service: str,
    name: str,
    data: bytes,
    *,
    host: str | None = None,
    selector: dict[str, str] | None = None,
) -> StoredConfig:
    await _refuse_during_config_rollout(fleet, service, name)
    return await fleet.configs.set(
        service, name, _content(data), utc_now(), host=host, selector=selector
    )


async def remove_config(
    fleet: Fleet,
    service: str,
    name: str,
    *,
    host: str | None = None,
    selector: dict[str, str] | None = None,
) -> StoredConfig | None:
    """Remove one override (its hosts fall back) or the whole file (None).

    A file the service's spec requires (``[config] files``) is refused: its next
    container could not start. Take it out of the spec first.
    """
    await _refuse_during_config_rollout(fleet, service, name)
    if host is None and not selector:
        history, _ = await fleet.services.get(service)
        spec = history.latest_spec
        if isinstance(spec, ServiceSpec) and spec.config and name in spec.config.files:
            raise ConfigurationError(
                f"{service} requires {name} ([config] files of its spec): "
                "roll out a spec without it first"
            )
    return await fleet.configs.remove(service, name, utc_now(), host=host, selector=selector)


def _content(data: bytes) -> ConfigContent:
    try:
        return ConfigContent.of(data)
    except ValueError as exc:  # pydantic's ValidationError: too large
        raise ConfigurationError(f"config file refused: {exc}") from exc


def _runs(facts: HostFacts, service: str) -> bool:
    return any(s.name == service and s.container_id for s in facts.services)


async def plan_config_rollout(
    fleet: Fleet, service: str, name: str, data: bytes, spec: RolloutSpec
) -> RolloutRecord:
    """The record of a config rollout of ``name``'s new content; nothing is written."""
    if spec.strategy in (Strategy.BLUE_GREEN, Strategy.RECREATE):
        raise ConfigurationError(f"a config rollout cannot use strategy {spec.strategy.value}")
    now = utc_now()
    history, _ = await fleet.services.get(service)
    running_spec = history.latest_spec
    if running_spec is None:
        raise ConfigurationError(f"no spec is known for {service}: roll it out first")
    if isinstance(running_spec, AppSpec):
        raise ConfigurationError(
            f"{service} is an app: config files are for single services (mount them "
            "from the Compose file)"
        )
    if running_spec.config is None:
        raise ConfigurationError(
            f"the spec of {service} has no [config] section: nowhere to put {name}"
        )
    content = _content(data)
    stored = await fleet.configs.get(service, name)
    if stored is not None and stored.document.content == content:
        raise ConfigurationError(
            f"{service}/{name} already holds this content (version {stored.document.version})"
        )
    change = f"rollout {config_rollout_id(service, name, _next(stored))}"
    if stored is None:
        document = first_document(service, name, content, now, change)
    else:
        document = stored.document.with_content(content, now, change=change)
    hosts = [h for h in fleet.live(await fleet.hosts(spec.selector), now) if _runs(h, service)]
    if not hosts:
        raise ConfigurationError(f"no live host matching {spec.selector or '{}'} runs {service}")
    record = RolloutRecord(
        id=await _unused_id(fleet, config_rollout_id(service, name, document.version)),
        service=service,
        revision=document.version,
        spec=spec,
        target=running_spec,
        hosts={facts.host: HostRecord(since=now) for facts in hosts},
        partition=spec.partition,
        created_at=now,
        updated_at=now,
        last_progress_at=now,
        config=ConfigTarget(
            name=name,
            document=document,
            previous=stored.document if stored else None,
            base_revision=stored.kv_revision if stored else None,
        ),
    )
    size = len(encode_record(record))
    if size > MAX_CONFIG_ROLLOUT_RECORD:
        raise ConfigurationError(
            f"a rollout of this file would need a {size}-byte record; set it with "
            "`fleetctl config set` instead, or make it smaller"
        )
    return record


async def _unused_id(fleet: Fleet, base: str) -> str:
    """The id, or with -2, -3... after a reverted or aborted try of the same version."""
    candidate, attempt = base, 1
    while await fleet.rollouts.get(candidate) is not None:
        attempt += 1
        candidate = f"{base}-{attempt}"
    return candidate


def _next(stored: StoredConfig | None) -> int:
    return stored.document.version + 1 if stored else 1


async def start_config_rollout(fleet: Fleet, record: RolloutRecord) -> RolloutRecord:
    """Claim the service (one rollout per service), then write the record."""
    await fleet.rollouts.claim_service(record.service, record.id)
    try:
        await fleet.rollouts.create(record)
    except BaseException:
        await fleet.rollouts.release_service(record.service, record.id)
        raise
    return record
