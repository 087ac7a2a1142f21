"""``fleetctl hosts``: each host's last heartbeat, and whether it is still news.

A host whose heartbeat is older than the host timeout is ``stale``: what it last said
of its services may no longer be true, so their health shows as unknown (``?``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rich.table import Table
from rich.text import Text

from controller.cli.render import ago, to_json
from controller.cli.tables import OneLineTable
from controller.rollouts.host_health import span
from protocol.models import Health, HostFacts, ServiceStatus


def heartbeat_age(facts: HostFacts, now: datetime) -> float:
    return max(0.0, (now - facts.sent_at).total_seconds())


def is_stale(facts: HostFacts, now: datetime, timeout: float) -> bool:
    return now - facts.sent_at > timedelta(seconds=timeout)


def hosts_table(hosts: list[HostFacts], now: datetime, timeout: float) -> Table:
    table = OneLineTable(
        *("host", "labels", "agent", "docker", "services", "status", "last seen"),
        title=f"{len(hosts)} host(s)",
        cut_first=("labels", "docker", "agent", "services"),
    )
    for facts in hosts:
        stale = is_stale(facts, now, timeout)
        services = ", ".join(_service(s, stale) for s in facts.services)
        labels = ",".join(f"{k}={v}" for k, v in sorted(facts.labels.items()))
        status = (
            Text(f"stale {span(heartbeat_age(facts, now))}", "bold red") if stale else Text("up")
        )
        table.add_row(
            facts.host,
            labels or "-",
            facts.agent_version.split(" ")[0],
            Text("down", "bold red") if facts.engine_down else facts.docker_version or "-",
            services or "-",
            status,
            ago(facts.sent_at, now),
        )
    return table


def _service(status: ServiceStatus, stale: bool) -> str:
    image = (status.image or "-").rsplit("/", 1)[-1]
    state = "?/?" if stale else f"{status.state.value}/{status.health.value}"
    return f"{status.name} {image} {state}" + (f" [{status.colour}]" if status.colour else "")


def hosts_json(hosts: list[HostFacts], now: datetime, timeout: float) -> str:
    """Each heartbeat as sent, with ``status`` (up or stale) and ``heartbeat_age`` in
    seconds; a stale host's services have health ``unknown`` (their state is as last sent)."""
    return to_json([_host_json(facts, now, timeout) for facts in hosts])


def _host_json(facts: HostFacts, now: datetime, timeout: float) -> dict[str, Any]:
    data = facts.model_dump(mode="json")
    stale = is_stale(facts, now, timeout)
    data["status"] = "stale" if stale else "up"
    data["heartbeat_age"] = round(heartbeat_age(facts, now), 1)
    if stale:
        for service in data["services"]:
            service["health"] = Health.UNKNOWN.value
    return data
