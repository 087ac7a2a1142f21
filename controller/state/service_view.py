"""What `fleetctl services` shows: each declared service against the live fleet."""

from __future__ import annotations

from datetime import datetime, timedelta

from controller.rollouts.convergence import live_facts
from controller.rollouts.service_summary import ServiceSummary, summarise
from controller.state.intents import Fleet
from controller.state.store import read_hosts


async def service_summaries(fleet: Fleet, now: datetime) -> list[ServiceSummary]:
    """Every service in KV fleet_services, judged on the hosts that beat recently."""
    timeout = timedelta(seconds=fleet.host_timeout)
    facts = await read_hosts(fleet.hosts_kv)
    live = live_facts(facts, now, timeout)
    active = dict(await fleet.rollouts.active())
    summaries = []
    for service in await fleet.services.names():
        record, _ = await fleet.services.get(service)
        rollout = None
        if service in active:
            stored = await fleet.rollouts.get(active[service])
            rollout = stored.record if stored is not None else None
        summaries.append(summarise(service, record.desired(), live, rollout))
    return summaries
