"""An app's fingerprint and digest, by their rules: what shapes the app counts (each
member's settings, what it waits for, the volumes and networks), what does not (digests,
health checks) does not; the digest exists only when every member is pinned."""

from __future__ import annotations

from protocol.app import AppSpec, Condition, Dependency, Member, NamedVolume
from protocol.fingerprint import app_digest, app_fingerprint
from protocol.spec import ContainerSettings, DockerHealthProbe, HealthCheck, ServiceSpec

PIN_A = "@sha256:" + "a" * 64
PIN_B = "@sha256:" + "b" * 64


def app(web_image: str = "r/web:1", cache_image: str = "r/cache:1", **changes: object) -> AppSpec:
    web = Member(
        name="web",
        spec=ServiceSpec(name="shop-web", image=web_image),
        depends_on=(Dependency(member="cache"),),
    )
    cache = Member(name="cache", spec=ServiceSpec(name="shop-cache", image=cache_image))
    return AppSpec(name="shop", members=(web, cache)).model_copy(update=changes)


def with_member(base: AppSpec, name: str, **spec_changes: object) -> AppSpec:
    members = tuple(
        m.model_copy(update={"spec": m.spec.model_copy(update=spec_changes)})
        if m.name == name
        else m
        for m in base.members
    )
    return base.model_copy(update={"members": members})


def test_what_shapes_an_app_changes_its_fingerprint() -> None:
    base = app()
    env = ContainerSettings(env={"MODE": "fast"})
    waits_healthy = base.members[0].model_copy(
        update={"depends_on": (Dependency(member="cache", condition=Condition.HEALTHY),)}
    )
    different = [
        with_member(base, "web", image="r/web:2"),
        with_member(base, "cache", container=env),
        base.model_copy(update={"members": (waits_healthy, base.members[1])}),
        base.model_copy(update={"volumes": (NamedVolume(name="shop_data"),)}),
    ]
    prints = {app_fingerprint(a) for a in [base, *different]}
    assert len(prints) == len(different) + 1


def test_digests_and_health_checks_leave_the_fingerprint_alone() -> None:
    base = app()
    same = [
        app(web_image="r/web:1" + PIN_A, cache_image="r/cache:1" + PIN_B),
        with_member(base, "web", health=HealthCheck(probe=DockerHealthProbe())),
    ]
    assert {app_fingerprint(a) for a in same} == {app_fingerprint(base)}


def test_the_digest_exists_only_when_every_member_is_pinned_and_follows_each() -> None:
    assert app_digest(app(web_image="r/web:1" + PIN_A)) is None
    both = app_digest(app(web_image="r/web:1" + PIN_A, cache_image="r/cache:1" + PIN_B))
    swapped = app_digest(app(web_image="r/web:1" + PIN_B, cache_image="r/cache:1" + PIN_A))
    assert both is not None
    assert swapped is not None
    assert both != swapped
