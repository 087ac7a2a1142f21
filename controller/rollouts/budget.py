"""How many more hosts a rollout may start now: its budget.

Budget (stop-first) = max_unavailable - (hosts updating + hosts unavailable for any other
reason), never below zero. A start-first update keeps serving, so it spends the surge
budget instead. Amounts are taken of the hosts past the partition (a convergence
rollout's of the whole matching fleet), max_unavailable rounded down and max_surge up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice

from controller.rollouts.host_health import OFFLINE, HostHealth
from controller.rollouts.model import HostPhase, RolloutRecord, Strategy, resolve_amount
from controller.rollouts.workload import starts_first


@dataclass(frozen=True)
class Limits:
    max_unavailable: int
    max_surge: int


def limits(record: RolloutRecord, targets: int) -> Limits:
    """max_unavailable rounds down and max_surge up, like Kubernetes; at least one of them."""
    spec = record.spec
    if spec.strategy is Strategy.RECREATE:
        return Limits(max_unavailable=max(targets, 1), max_surge=0)
    unavailable = resolve_amount(spec.max_unavailable, targets, round_up=False)
    surge = resolve_amount(spec.max_surge, targets, round_up=True)
    if unavailable == 0 and surge == 0:
        unavailable = 1
    return Limits(unavailable, surge)


STARTS_PER_PASS = 200
"""Updates (or reverts) one pass starts at most; the next pass follows at once while the
budget allows more. At 5,000 hosts a wave is 500: started by one pass, its commands took
a quarter of a second to all go out and their answers came back as one burst, the last
host's round trip three times the first's. Two hundred at a time, each pass's commands
go within milliseconds and the answers come in smaller bursts (bench/rollout_scale.py:
p99 round trip 100-200 ms before, about 50 after; 100 at a time was no better and cost
more passes, 300 was worse)."""


def first_starts(candidates: Iterator[str], budget: int) -> tuple[tuple[str, ...], bool]:
    """Of the hosts that may start now (in order, taken lazily), those this pass starts:
    at most ``budget`` and STARTS_PER_PASS; and whether more could start at once."""
    taken = tuple(islice(candidates, min(budget, STARTS_PER_PASS + 1)))
    return taken[:STARTS_PER_PASS], len(taken) > STARTS_PER_PASS


def eligible_hosts(record: RolloutRecord) -> tuple[str, ...]:
    """Hosts this rollout may update now: those at or past the partition, in order."""
    ordered = record.ordered_hosts()
    partition = record.partition or 0
    return ordered[partition:]


def start_budget(record: RolloutRecord, health: Mapping[str, HostHealth], targets: int) -> int:
    """How many more hosts may start an update now. A convergence rollout's pace is its
    policy taken of the whole matching fleet (its hosts and the others), as it is now:
    hosts that join it make the fleet larger."""
    if record.converging:
        targets += sum(1 for host in record.others if host not in record.hosts)
    limit = limits(record, targets)
    if starts_first(record.target):
        # Each start-first host runs two copies at once: max_surge bounds that (or, when
        # no surge is given, max_unavailable does, so it never means "all at once").
        surging = record.count(HostPhase.UPDATING, HostPhase.REVERTING)
        return max(0, (limit.max_surge or limit.max_unavailable) - surging)
    return max(0, limit.max_unavailable - unavailable(record, health))


def unavailable(record: RolloutRecord, health: Mapping[str, HostHealth]) -> int:
    """Hosts out of service: a stop-first update in flight, or offline, or unhealthy.

    A convergence rollout's own hosts are out already (that is why they are in it: a
    stopped container, a missing service), so of them only those it updates count; the
    service's other matching hosts (``others``) count when they are out."""
    start_first = starts_first(record.target)
    in_flight: set[str] = set()
    if not start_first:
        in_flight.update(record.in_phase(HostPhase.UPDATING), record.in_phase(HostPhase.REVERTING))
    count = len(in_flight)
    if not record.converging:
        # Every pass counts this for every host (5,000 of them, say): from the phase
        # index and plain sweeps, not a property and a phase test per host.
        hosts = record.hosts
        count += sum(
            1
            for host, known in health.items()
            if known.unavailable and host in hosts and host not in in_flight
        )
        count += sum(1 for host in hosts if host not in health and host not in in_flight)
    others = (h for h in record.others if h not in record.hosts)
    return count + sum(1 for host in others if health.get(host, OFFLINE).unavailable)
