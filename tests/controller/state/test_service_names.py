"""A name is one container on each host: an app's member (``<app>-<member>``) and a
declared service of that name may not both be declared. The services bucket on the
session's real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest

from controller.broker import NatsServer
from controller.state.services import ServiceStore
from controller.state.store import open_buckets
from protocol.app import AppSpec, Member
from protocol.spec import ServiceSpec

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


@pytest.fixture
async def services(nats_server: NatsServer) -> AsyncIterator[ServiceStore]:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        _, services_kv, _ = await open_buckets(client.jetstream(timeout=5))
        yield ServiceStore(services_kv)
    finally:
        await client.close()


def app_of(name: str, member: str) -> AppSpec:
    spec = ServiceSpec(name=f"{name}-{member}", image="r.local/web:1")
    return AppSpec(name=name, members=(Member(name=member, spec=spec),))


async def test_a_service_named_as_an_apps_member_is_refused_and_back(
    services: ServiceStore, test_id: str
) -> None:
    app = app_of(f"a{test_id}", "web")
    assert await services.clash(app) is None  # nothing declared yet
    await services.add_revision(app.name, app, lambda n: f"{app.name}-r{n}", NOW)
    member_named = ServiceSpec(name=f"a{test_id}-web", image="r.local/web:1")
    assert await services.clash(member_named) == (
        f"a{test_id}-web runs as a member of app a{test_id}: rename one of them"
    )
    other = ServiceSpec(name=f"a{test_id}-worker", image="r.local/web:1")
    assert await services.clash(other) is None  # no such member

    # The other way: a service first, then an app whose member would take its name.
    service = ServiceSpec(name=f"s{test_id}-db", image="r.local/db:1")
    await services.add_revision(service.name, service, lambda n: f"{service.name}-r{n}", NOW)
    assert await services.clash(app_of(f"s{test_id}", "db")) == (
        f"member db of s{test_id} would run as s{test_id}-db, a declared service: "
        "rename one of them"
    )
