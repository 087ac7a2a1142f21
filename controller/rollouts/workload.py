"""What a rollout rolls out: one service's container, or an app (a Compose project's
containers, updated on each host as one unit). The planner, the records and convergence
treat both alike; the few places that differ ask here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import ValidationError

from protocol.app import AppSpec, Member
from protocol.errors import ConfigurationError
from protocol.fingerprint import app_digest, app_fingerprint, image_digest, settings_fingerprint
from protocol.spec import BlueGreen, ServiceSpec, UpdateOrder

Workload = ServiceSpec | AppSpec

ChangeMember = Callable[[Member], ServiceSpec]

Mark = tuple[str, str | None]
"""What an agent reports it applied: the settings fingerprint and the pinned digest."""


def mark_of(workload: Workload) -> Mark:
    if isinstance(workload, AppSpec):
        return app_fingerprint(workload), app_digest(workload)
    return settings_fingerprint(workload), image_digest(workload.image)


def describe(workload: Workload) -> str:
    """What it runs, for people: the image, or each member's."""
    if isinstance(workload, AppSpec):
        return ", ".join(f"{m.name}={m.spec.image}" for m in workload.members)
    return workload.image


def member_images(workload: Workload) -> dict[str, str]:
    """An app's members' images, by member name; nothing for a service."""
    if isinstance(workload, AppSpec):
        return {member.name: member.spec.image for member in workload.members}
    return {}


def specs_of(workload: Workload) -> tuple[ServiceSpec, ...]:
    """The service specs it is made of: itself, or each member's."""
    if isinstance(workload, AppSpec):
        return tuple(member.spec for member in workload.members)
    return (workload,)


def unpinned(spec: ServiceSpec) -> ServiceSpec:
    """The spec without the digest a rollout pinned: what the operator wrote."""
    return spec.model_copy(update={"image": spec.image.split("@", 1)[0]})


def what_runs(workload: Workload) -> Workload:
    """Without the digests a rollout pinned (each member's, for an app)."""
    if isinstance(workload, AppSpec):
        return with_members(workload, lambda member: unpinned(member.spec))
    return unpinned(workload)


def pinned_by_operator(workload: Workload) -> bool:
    """Whether the operator named a digest (every member's, for an app): then a change of
    digest is a change of what runs."""
    return all("@" in spec.image for spec in specs_of(workload))


def with_members(app: AppSpec, change: ChangeMember) -> AppSpec:
    members = tuple(m.model_copy(update={"spec": change(m)}) for m in app.members)
    return app.model_copy(update={"members": members})


def pin_members(app: AppSpec, digests: Mapping[str, str]) -> AppSpec:
    """Each member's image pinned to its digest in ``digests`` (by member name), unless
    pinned already or not named there."""

    def pin(member: Member) -> ServiceSpec:
        digest = digests.get(member.name)
        if digest is None or "@" in member.spec.image:
            return member.spec
        return member.spec.model_copy(update={"image": f"{member.spec.image}@{digest}"})

    return with_members(app, pin)


def stop_grace(workload: Workload) -> float:
    """Seconds to stop it all (members are stopped one after another)."""
    return sum(spec.stop_grace_period for spec in specs_of(workload))


def healthy_deadline(workload: Workload) -> float:
    """Seconds its health checks may take (members are checked one after another)."""
    return sum(spec.health.healthy_deadline for spec in specs_of(workload) if spec.health)


def starts_first(workload: Workload) -> bool:
    """Whether a host runs the new copy beside the old before stopping it (a service's
    start-first order); an app's members are replaced in place, one after another."""
    if isinstance(workload, AppSpec):
        return False
    return workload.update_order is UpdateOrder.START_FIRST


def target_of(base: Workload, image: str | None, *, blue_green: bool) -> Workload:
    """What a rollout of ``base`` rolls out: with ``image`` instead of its own, for a
    service. An app's images are in its Compose file, and it has no blue-green."""
    if isinstance(base, AppSpec):
        if image:
            raise ConfigurationError(
                f"{base.name} is an app: its images are in its Compose file "
                "(fleetctl apply -f FILE --app NAME)"
            )
        if blue_green:
            raise ConfigurationError(
                f"{base.name} is an app: blue-green is for single services "
                "(an app's members are replaced in place)"
            )
        return base
    try:
        target = base.model_copy(update={"image": image}) if image else base
        return ServiceSpec.model_validate(target.model_dump())
    except ValidationError as exc:
        raise ConfigurationError(f"invalid target for {base.name}: {exc}") from exc


def blue_green_of(workload: Workload) -> BlueGreen | None:
    """A service's blue-green settings; an app has none (its members are replaced)."""
    return workload.blue_green if isinstance(workload, ServiceSpec) else None
