"""What a rollout rolls out: one service's container, or an app (a Compose project's
containers, updated on each host as one unit). The planner, the records and convergence
treat both alike; the few places that differ ask here.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from protocol.app import AppSpec, Member
from protocol.errors import ConfigurationError
from protocol.fingerprint import app_digest, app_fingerprint, image_digest, settings_fingerprint
from protocol.spec import UNCHECKED_DEADLINE, BlueGreen, ServiceSpec, UpdateOrder

Workload = ServiceSpec | AppSpec

ChangeMember = Callable[[Member], ServiceSpec]

COPIES = 5
"""The copies of a service a host may have (serving, set aside, next, either colour):
removing one stops each."""

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


def as_declared(wanted: Workload, accepted: Workload) -> tuple[Workload, Workload]:
    """Both as an operator's file compares them: a digest the file names counts (a
    change of it is a change of what runs); one a rollout pinned to the file's tag does
    not. For an app, member by member."""
    if isinstance(wanted, AppSpec) and isinstance(accepted, AppSpec):
        exact = {m.name for m in wanted.members if "@" in m.spec.image}

        def strip(member: Member) -> ServiceSpec:
            return member.spec if member.name in exact else unpinned(member.spec)

        return with_members(wanted, strip), with_members(accepted, strip)
    if isinstance(wanted, ServiceSpec) and "@" in wanted.image:
        return wanted, accepted
    return what_runs(wanted), what_runs(accepted)


def with_members(app: AppSpec, change: ChangeMember) -> AppSpec:
    members = tuple(m.model_copy(update={"spec": change(m)}) for m in app.members)
    return app.model_copy(update={"members": members})


def stop_grace(workload: Workload) -> float:
    """Seconds to stop it all (members are stopped one after another)."""
    return sum(spec.stop_grace_period for spec in specs_of(workload))


def app_update_timeout(app: AppSpec, previous: Workload | None = None) -> float:
    """Seconds one host's update of ``app`` may take at worst: members one after another,
    each stopped, started once its dependencies meet their condition (up to each one's
    wait), and checked (a member with no check runs for up to UNCHECKED_DEADLINE); on a
    failure, each replaced member stopped and put back, checked again; then the members
    ``previous`` had and ``app`` has not removed (each of up to COPIES copies stopped)."""
    total = 0.0
    for member in app.members:
        check = member.spec.health
        checked = check.initial_delay + check.healthy_deadline if check else UNCHECKED_DEADLINE
        total += 2 * (member.spec.stop_grace_period + checked)
        total += sum(app.member(d.member).awaited_for for d in member.depends_on)
    kept = {member.name for member in app.members}
    if isinstance(previous, AppSpec):
        dropped = [m for m in previous.members if m.name not in kept]
        total += sum(COPIES * m.spec.stop_grace_period for m in dropped)
    return total


def healthy_deadline(workload: Workload) -> float:
    """Seconds its health checks may take (members are checked one after another)."""
    return sum(spec.health.healthy_deadline for spec in specs_of(workload) if spec.health)


def starts_first(workload: Workload) -> bool:
    """Whether a host runs the new copy beside the old before stopping it (a service's
    start-first order); an app's members are replaced in place, one after another."""
    if isinstance(workload, AppSpec):
        return False
    return workload.update_order is UpdateOrder.START_FIRST


def target_of(
    base: Workload,
    image: str | None,
    *,
    blue_green: bool,
    analysed: bool = False,
    known: Workload | None = None,
) -> Workload:
    """What a rollout of ``base`` rolls out: with ``image`` instead of its own, for a
    service. An app's images are in its Compose file, and it has neither blue-green nor
    canary analysis (its checks measure one service's containers). ``known``:
    what the name was declared as so far; a service cannot become an app (or back), since
    hosts would run both under one name."""
    if known is not None and isinstance(known, AppSpec) != isinstance(base, AppSpec):
        was, now = (
            ("an app", "a service") if isinstance(known, AppSpec) else ("a service", "an app")
        )
        raise ConfigurationError(
            f"{base.name} is {was}: {now} cannot take its name (choose another name)"
        )
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
        if analysed:
            raise ConfigurationError(
                f"{base.name} is an app: analysis checks are for single services "
                "(a canary of an app waits for promote, or auto_promote_after)"
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
