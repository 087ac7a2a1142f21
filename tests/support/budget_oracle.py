"""The rollout budget as the README states it, written from its rules and nothing else.

The tests judge the planner and the fleet against this, so it must not share a line of
reasoning with ``controller/rollouts/planner.py``: it never imports the planner, and it reads only
the rollout record's data (its spec, its hosts' phases, the operator's partition).

The rules, quoted:

- README, "The controller": targets are "in sorted host-id order (the ordinal used by
  ``--partition`` and ``--canary``)"; "``--partition N``: only hosts at or past ordinal N";
  "``--canary N``: the first wave, then ``awaiting_promotion`` until ``fleetctl rollout
  promote``".
- README: "Budget: ``--max-unavailable`` (count or %, rounds down) minus hosts updating
  stop-first, offline (no heartbeat within the host timeout) or unhealthy; never below zero,
  zero when paused. Start-first updates spend ``--max-surge`` (rounds up) instead."
- DESIGN.md: "Budget = max_unavailable - (in flight + unavailable for any reason), never
  below zero, zero while paused or failed; hosts are chosen in a deterministic order", and
  "Commands are not queued for offline hosts".
- README, failures: "revert (every host this rollout updated goes back to the previous
  revision, within the same budget)".
- The rollout record, ``HostRecord.not_before``: "Do not send this host anything before
  then (a deferred or busy reply)".

Three rules the README leaves unsaid, taken from what the strategy names and the CLI's
defaults mean (see the report on issue 14 for the wording the README could add):

- ``recreate`` replaces every eligible host at once;
- when neither ``--max-unavailable`` nor ``--max-surge`` allows a single host (both
  resolve to 0), one host may be unavailable, as in Kubernetes (else nothing could move);
- a start-first update with ``--max-surge 0`` (the default) spends ``--max-unavailable``.

Percentages are of the eligible hosts (those at or past the partition): they are the
hosts the rollout may still touch.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from controller.rollouts.model import HostPhase, RolloutRecord, RolloutSpec, Strategy
from protocol.spec import ServiceSpec, UpdateOrder

UPDATING = (HostPhase.UPDATING, HostPhase.REVERTING)
"""A stop-first host in these phases has its old container stopped or about to be."""


def resolve(amount: int | str, total: int, *, round_up: bool) -> int:
    """A count as is; ``"N%"`` of ``total``, rounded down or up (integer arithmetic)."""
    if isinstance(amount, int):
        return amount
    whole, rest = divmod(int(amount.removesuffix("%")) * total, 100)
    return whole + 1 if round_up and rest else whole


@dataclass(frozen=True)
class Allowance:
    unavailable: int
    """Hosts that may be out of service at once (stop-first)."""
    surge: int
    """Hosts that may run two copies at once (start-first); 0 when none is given."""

    @property
    def start_first(self) -> int:
        """What a start-first update spends: the surge, or max_unavailable without one."""
        return self.surge or self.unavailable


def eligible(record: RolloutRecord) -> list[str]:
    """The hosts the rollout may touch, in their ordinal order: at or past the partition."""
    return sorted(record.hosts)[record.partition or 0 :]


def allowance(spec: RolloutSpec, eligible_hosts: int) -> Allowance:
    if spec.strategy is Strategy.RECREATE:
        return Allowance(unavailable=eligible_hosts, surge=0)
    unavailable = resolve(spec.max_unavailable, eligible_hosts, round_up=False)
    surge = resolve(spec.max_surge, eligible_hosts, round_up=True)
    if unavailable == 0 and surge == 0:
        unavailable = 1
    return Allowance(unavailable, surge)


def allowance_of(record: RolloutRecord) -> Allowance:
    """A rollout's amounts are taken of its eligible hosts; a convergence rollout's of the
    whole matching fleet: its own hosts and the service's other matching hosts."""
    fleet = set(eligible(record))
    if record.converging:
        fleet |= set(record.others)
    return allowance(record.spec, len(fleet))


def stop_first(record: RolloutRecord) -> bool:
    # README: an app's members are replaced in place (stop-first, each of them).
    target = record.target
    return not isinstance(target, ServiceSpec) or target.update_order is UpdateOrder.STOP_FIRST


def in_flight(record: RolloutRecord) -> set[str]:
    """Hosts an update (or a revert) is replacing right now."""
    return {host for host, entry in record.hosts.items() if entry.phase in UPDATING}


def out_of_service(
    record: RolloutRecord, offline: Collection[str], unhealthy: Collection[str]
) -> set[str]:
    """The rollout's hosts out of service for any reason, each counted once; in a
    convergence rollout, of its own hosts only those it updates (README: they are out
    already), and of the service's other matching hosts those that are out."""
    updating = in_flight(record) if stop_first(record) else set()
    out = set(offline) | set(unhealthy)
    if record.converging:
        return updating | (out & set(record.others))
    return updating | (out & set(record.hosts))


def budget(
    record: RolloutRecord,
    offline: Collection[str],
    unhealthy: Collection[str],
    *,
    stopped: bool = False,
) -> int:
    """How many more hosts may start an update (or a revert) now."""
    if stopped:
        return 0
    limit = allowance_of(record)
    if stop_first(record):
        return max(0, limit.unavailable - len(out_of_service(record, offline, unhealthy)))
    return max(0, limit.start_first - len(in_flight(record)))


def due(record: RolloutRecord, host: str, now: datetime) -> bool:
    """The record's own rule for ``not_before``: "Do not send this host anything before
    then (a deferred or busy reply)"."""
    not_before = record.hosts[host].not_before
    return not_before is None or not_before <= now


def waiting(record: RolloutRecord, offline: Collection[str], now: datetime) -> list[str]:
    """Hosts that may start now, in order: eligible, ready, due, online, in the canary wave
    while it is not promoted."""
    hosts = eligible(record)
    canary = record.spec.canary
    if canary is not None and not record.promoted:
        assert isinstance(canary, int), "the oracle knows canary waves of N hosts"
        assert canary >= 1, "a canary wave of no host is not a wave"
        hosts = hosts[:canary]
    return [
        host
        for host in hosts
        if record.hosts[host].phase is HostPhase.READY
        and due(record, host, now)
        and host not in offline
    ]


def next_wave(
    record: RolloutRecord, offline: Collection[str], unhealthy: Collection[str], now: datetime
) -> tuple[str, ...]:
    """The hosts a running rollout starts now: the first ``budget`` waiting hosts."""
    return tuple(waiting(record, offline, now)[: budget(record, offline, unhealthy)])


def revertible(record: RolloutRecord, offline: Collection[str], now: datetime) -> list[str]:
    """Hosts a revert may send back now, in order: updated by this rollout, online, due."""
    return [
        host
        for host in sorted(record.hosts)
        if record.hosts[host].phase is HostPhase.DONE
        and due(record, host, now)
        and host not in offline
    ]
