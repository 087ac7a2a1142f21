"""Hosts that come back (or are enrolled) while a rollout of their service runs become
hosts of that rollout: pre-flight, their turn under the budget, its outcome.

Pure. Only a rollout that can take a host mid-way takes it: a rolling or recreate
rollout of an image, running or in pre-flight. A joined host is checked (pre-flight)
beside the others' updates, within the pre-flight parallelism, then waits its turn. A
canary not yet promoted (the new host would change the canary wave), a partitioned
rollout (it would move the partition's line), blue-green, config and removal rollouts,
and paused ones, do not: their hosts are converged once the rollout ended. A convergence
rollout takes the hosts the convergence pass finds in need of its revision
(takes_converging_hosts).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from controller.rollouts.convergence import matches, runs
from controller.rollouts.model import HostPhase, HostRecord, RolloutRecord, RolloutStatus
from protocol.models import HostFacts

TAKES_HOSTS = frozenset({RolloutStatus.PREFLIGHT, RolloutStatus.RUNNING})
"""Not paused (by the operator, or by failures: more hosts would dilute the failure
ratio and let it roll on), not waiting for a promote, not reverting or over."""


def takes_joiners(record: RolloutRecord) -> bool:
    return (
        record.status in TAKES_HOSTS
        and not record.aborted
        and not record.converging
        and not record.removing
        and record.config is None
        and not record.blue_green
        and record.partition is None
        and (record.spec.canary is None or record.promoted)
    )


def takes_converging_hosts(record: RolloutRecord) -> bool:
    """A convergence rollout in progress takes the hosts that need what it converges to
    (judged by the convergence pass, which knows the accepted revision): hosts whose
    heartbeats arrive a moment apart become one rollout, not one rollout each."""
    return (
        record.converging
        and not record.removing
        and record.status in TAKES_HOSTS
        and not record.aborted
        and not record.paused
    )


def joining_hosts(record: RolloutRecord, live: Mapping[str, HostFacts]) -> list[str]:
    """Live hosts on the rollout's selector that it does not have, in host order."""
    if not takes_joiners(record):
        return []
    return [
        host
        for host in sorted(live)
        if host not in record.hosts and matches(live[host], record.spec.selector)
    ]


def join(record: RolloutRecord, hosts: list[str], now: datetime) -> RolloutRecord:
    """The rollout with ``hosts`` added, each to be checked (pre-flight) first."""
    added = {host: HostRecord(phase=HostPhase.PENDING, since=now) for host in hosts}
    return record.model_copy(update={"hosts": {**record.hosts, **added}, "updated_at": now})


def deploys(facts: HostFacts, service: str) -> bool:
    """Whether a joining host gets the service anew (else it is updated)."""
    return not runs(facts, service)
