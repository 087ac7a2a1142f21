"""Hypothesis strategies for the planner: rollouts *after* pre-flight, in every mix.

A rollout that has not finished pre-flight, or that is paused, failed or complete, never
reaches the budget at all; drawing phases and statuses at random gives mostly those, and
the budget assertions then run on a few per cent of the examples. These strategies build
a scene of a known kind instead (running, stopped for a known cause, or reverting), with
its hosts ready, updating, done, failed and offline or unhealthy in every mix, and (unless
asked otherwise) at least one host waiting for its turn and one already out of service, so
that the budget is what decides.

Host states come from one ``binary`` draw (two bytes a host), which keeps generation cheap
and still shrinks towards the plainest fleet (every byte zero: ready, online, serving).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from hypothesis import strategies as st

from controller.rollouts.model import (
    Amount,
    FailureAction,
    HostPhase,
    HostRecord,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
    Strategy,
)
from controller.rollouts.planner import OFFLINE, HostHealth
from protocol.spec import ServiceSpec, UpdateOrder

PLAN_NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TARGET = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0")
PREVIOUS = ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.0.0")
DEFERRED = PLAN_NOW + timedelta(seconds=5)
MAX_HOSTS = 20


class Kind(StrEnum):
    RUNNING = "running"
    """Nothing stops it: it rolls forward within the budget."""
    STOPPED = "stopped"
    """Paused, or stopped by failures, a failed check or the progress deadline (pause)."""
    REVERTING = "reverting"
    """Aborted, or stopped with failure_action revert: updated hosts go back."""


class Cause(StrEnum):
    NONE = "none"
    PAUSED = "paused by the operator"
    FAILURES = "failures past max_failure_ratio"
    ANALYSIS = "a failed analysis check"
    DEADLINE = "the progress deadline"
    ABORTED = "aborted by the operator"


class Serving(StrEnum):
    SERVING = "serving"
    UNHEALTHY = "unhealthy"
    ABSENT = "absent"
    """Online, and the service does not run there at all: not out of service."""
    OFFLINE = "offline"


HEALTH = {
    Serving.SERVING: HostHealth(online=True, serving=True),
    Serving.UNHEALTHY: HostHealth(online=True, serving=False),
    Serving.ABSENT: HostHealth(online=True, serving=None),
    Serving.OFFLINE: OFFLINE,
}

# Slots indexed by a byte: the weights of the mix. Slot 0 is the plainest.
FORWARD_PHASES = (
    [HostPhase.READY] * 6
    + [HostPhase.UPDATING] * 3
    + [HostPhase.DONE] * 4
    + [HostPhase.FAILED] * 2
    + [HostPhase.NOT_READY]
)
# Forward work still in flight holds a revert back, so it is rarer here.
REVERT_PHASES = (
    [HostPhase.DONE] * 12
    + [HostPhase.REVERTING] * 4
    + [HostPhase.REVERTED] * 5
    + [HostPhase.READY] * 5
    + [HostPhase.FAILED] * 4
    + [HostPhase.UPDATING, HostPhase.NOT_READY]
)
BLUE_GREEN_PHASES = (
    [HostPhase.READY] * 3
    + [HostPhase.UPDATING] * 2
    + [HostPhase.STAGED] * 3
    + [HostPhase.SWITCHING, HostPhase.DONE, HostPhase.DONE]
    + [HostPhase.RETIRING, HostPhase.RETIRED, HostPhase.RETIRED]
    + [HostPhase.FAILED, HostPhase.NOT_READY]
)
SERVINGS = (
    [Serving.SERVING] * 10 + [Serving.UNHEALTHY] * 2 + [Serving.OFFLINE] * 3 + [Serving.ABSENT]
)
# Forced states that take a host out of service for the budget (stop-first).
OUT_OF_SERVICE = (
    (HostPhase.UPDATING, Serving.SERVING),
    (HostPhase.UPDATING, Serving.UNHEALTHY),
    (HostPhase.UPDATING, Serving.OFFLINE),
    (HostPhase.DONE, Serving.OFFLINE),
    (HostPhase.DONE, Serving.UNHEALTHY),
    (HostPhase.READY, Serving.OFFLINE),
    (HostPhase.FAILED, Serving.UNHEALTHY),
)
REVERT_OUT_OF_SERVICE = (
    (HostPhase.REVERTING, Serving.SERVING),
    (HostPhase.REVERTING, Serving.OFFLINE),
    (HostPhase.DONE, Serving.OFFLINE),
    (HostPhase.DONE, Serving.UNHEALTHY),
    (HostPhase.FAILED, Serving.UNHEALTHY),
    (HostPhase.READY, Serving.OFFLINE),
)


@dataclass(frozen=True)
class Scene:
    """A rollout record and its hosts' health, and what kind of moment it is."""

    kind: Kind
    cause: Cause
    record: RolloutRecord
    health: dict[str, HostHealth]
    stage: Stage | None = None
    """Blue-green scenes only."""

    @property
    def offline(self) -> frozenset[str]:
        """Hosts not online, those never heard of (no health at all) included."""
        everyone = [*self.record.hosts, *self.record.others]
        return frozenset(h for h in everyone if not self.health.get(h, OFFLINE).online)

    @property
    def unhealthy(self) -> frozenset[str]:
        return frozenset(
            h for h, health in self.health.items() if health.online and health.serving is False
        )


amounts = st.one_of(
    st.integers(min_value=0, max_value=MAX_HOSTS + 2),
    st.integers(min_value=0, max_value=100).map(lambda p: f"{p}%"),
)
surges: st.SearchStrategy[Amount] = st.one_of(
    st.just(0), st.integers(min_value=0, max_value=4), st.just("25%"), st.just("50%")
)
strategies = st.sampled_from(
    [Strategy.ROLLING, Strategy.ROLLING, Strategy.CANARY, Strategy.PARTITION, Strategy.RECREATE]
)
stop_causes = st.sampled_from([Cause.PAUSED, Cause.FAILURES, Cause.ANALYSIS, Cause.DEADLINE])
revert_causes = st.sampled_from([Cause.ABORTED, Cause.FAILURES, Cause.ANALYSIS, Cause.DEADLINE])
orders = st.sampled_from(list(UpdateOrder))
unit = st.floats(min_value=0, max_value=0.99)


def _states(
    raw: bytes, phases: list[HostPhase]
) -> list[tuple[HostPhase, Serving, datetime | None]]:
    states = []
    for index in range(0, len(raw), 2):
        phase = phases[raw[index] % len(phases)]
        serving = SERVINGS[raw[index + 1] % len(SERVINGS)]
        deferred = DEFERRED if raw[index + 1] >= 224 else None
        states.append((phase, serving, deferred))
    return states


@st.composite
def scenes(
    draw: st.DrawFn,
    kind: Kind | None = None,
    order: UpdateOrder | None = None,
    *,
    busy: bool = True,
    partitioned: bool = False,
    canary_wave: bool = False,
    room: bool = False,
) -> Scene:
    """A rollout after pre-flight, of ``kind`` (any when None), with ``order`` updates.

    ``busy``: one host is already out of service (or, start-first, in flight), so the fleet
    has two hosts at least; ``partitioned``: some hosts are below the partition;
    ``canary_wave``: a canary wave that is not promoted yet; ``room``: max_unavailable (or,
    start-first, max_surge) leaves room for one to three more hosts.
    """
    kind = kind or draw(st.sampled_from(list(Kind)))
    order = order or draw(orders)
    size = draw(st.integers(min_value=2 if busy or partitioned else 1, max_value=MAX_HOSTS))
    names = [f"host-{index:03d}" for index in range(size)]
    if partitioned:
        partition: int | None = draw(st.integers(min_value=1, max_value=size - 1))
    else:
        partition = draw(st.none() | st.integers(min_value=0, max_value=size - 1))
    first = partition or 0
    phases = REVERT_PHASES if kind is Kind.REVERTING else FORWARD_PHASES
    states = _states(draw(st.binary(min_size=2 * size, max_size=2 * size)), phases)

    # A forced wave leaves a host outside it, where there are hosts enough.
    widest = size - first - (1 if canary_wave else 0)
    waves = st.integers(min_value=1, max_value=max(1, widest))
    canary = draw(waves) if canary_wave else draw(st.none() | waves)
    promoted = canary is not None and not canary_wave and draw(st.booleans())
    # The hosts that may start now: past the partition, and in the canary wave until promoted.
    last = first + canary - 1 if canary is not None and not promoted else size - 1

    # Pin one host that can move and one already out, where there is room for both.
    free = list(range(size))
    if kind is Kind.REVERTING:
        pinned = draw(st.integers(min_value=0, max_value=size - 1))
        states[pinned] = (HostPhase.DONE, Serving.SERVING, None)
    else:
        pinned = draw(st.integers(min_value=first, max_value=last))
        states[pinned] = (HostPhase.READY, Serving.SERVING, None)
    free.remove(pinned)
    if canary_wave and canary is not None and last + 1 < size:  # and one waits past the wave
        behind = draw(st.integers(min_value=last + 1, max_value=size - 1))
        states[behind] = (HostPhase.READY, Serving.SERVING, None)
        free.remove(behind)
    if busy and free:
        out = free.pop(draw(st.integers(min_value=0, max_value=len(free) - 1)))
        if order is UpdateOrder.START_FIRST:
            in_flight = HostPhase.REVERTING if kind is Kind.REVERTING else HostPhase.UPDATING
            states[out] = (in_flight, draw(st.sampled_from(list(Serving))), None)
        else:
            choices = REVERT_OUT_OF_SERVICE if kind is Kind.REVERTING else OUT_OF_SERVICE
            phase, serving = draw(st.sampled_from(choices))
            states[out] = (phase, serving, None)

    cause = Cause.NONE
    if kind is Kind.STOPPED:
        cause = draw(stop_causes)
    elif kind is Kind.REVERTING:
        cause = draw(revert_causes)
    if cause is Cause.FAILURES and free and not any(s[0] is HostPhase.FAILED for s in states):
        states[free.pop(0)] = (HostPhase.FAILED, draw(st.sampled_from(list(Serving))), None)
    if cause is Cause.FAILURES and not any(s[0] is HostPhase.FAILED for s in states):
        cause = Cause.PAUSED if kind is Kind.STOPPED else Cause.ABORTED  # a single host
    if kind is Kind.REVERTING and cause is Cause.DEADLINE:
        # The deadline fails only a rollout with work left: one eligible host still waits.
        waiting = [index for index in free if first <= index <= last]
        if waiting:
            states[waiting[0]] = (HostPhase.READY, Serving.SERVING, None)
            free.remove(waiting[0])
        else:
            cause = Cause.ABORTED

    failed = sum(1 for s in states if s[0] is HostPhase.FAILED)
    if cause is Cause.FAILURES:  # past the ratio however the accepted ones are read
        tolerated = draw(st.integers(min_value=0, max_value=failed - 1))
        ratio = draw(unit) * (failed - tolerated) / size
    elif failed and draw(st.booleans()):  # within: every failure accepted by a resume
        tolerated = draw(st.integers(min_value=failed, max_value=failed + 2))
        ratio = draw(unit)
    else:  # within: at most max_failure_ratio of the hosts failed
        tolerated = draw(st.integers(min_value=0, max_value=failed))
        ratio = failed / size + draw(unit) * (1 - failed / size)

    deadline = float(draw(st.integers(min_value=60, max_value=900)))
    if cause is Cause.DEADLINE:
        stalled = deadline + draw(st.integers(min_value=1, max_value=300))
    else:
        stalled = draw(st.integers(min_value=0, max_value=int(deadline) - 1))

    strategy = Strategy.CANARY if canary is not None else draw(strategies)
    if kind is Kind.REVERTING:
        action = FailureAction.REVERT
    elif kind is Kind.STOPPED:
        action = FailureAction.PAUSE
    else:
        action = draw(st.sampled_from(list(FailureAction)))
    not_ready = any(s[0] is HostPhase.NOT_READY for s in states)
    max_unavailable, max_surge = draw(amounts), draw(surges)
    if room:
        start_first = order is UpdateOrder.START_FIRST
        taken = sum(
            1
            for phase, serving, _ in states
            if phase in (HostPhase.UPDATING, HostPhase.REVERTING)
            or (serving in (Serving.OFFLINE, Serving.UNHEALTHY) and not start_first)
        )
        spare = taken + draw(st.integers(min_value=1, max_value=3))
        max_unavailable, max_surge = (1, spare) if start_first else (spare, max_surge)
        strategy = Strategy.CANARY if canary is not None else Strategy.ROLLING
    spec = RolloutSpec(
        strategy=strategy,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        canary=canary,
        max_failure_ratio=ratio,
        failure_action=action,
        min_ready=0 if not_ready else "100%",
        progress_deadline=deadline,
    )
    if kind is Kind.REVERTING:
        status = draw(st.sampled_from([RolloutStatus.REVERTING, RolloutStatus.RUNNING]))
    else:
        status = draw(
            st.sampled_from(
                [RolloutStatus.RUNNING] * 3
                + [RolloutStatus.AWAITING_PROMOTION, RolloutStatus.HELD, RolloutStatus.PAUSED]
            )
        )
    hosts = {
        name: HostRecord(phase=phase, since=PLAN_NOW, not_before=deferred)
        for name, (phase, _, deferred) in zip(names, states, strict=True)
    }
    record = RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=spec,
        target=TARGET.model_copy(update={"update_order": order}),
        previous=PREVIOUS,
        hosts=hosts,
        status=status,
        created_at=PLAN_NOW - timedelta(hours=1),
        updated_at=PLAN_NOW,
        last_progress_at=PLAN_NOW - timedelta(seconds=stalled),
        paused=cause is Cause.PAUSED,
        promoted=promoted,
        aborted=cause is Cause.ABORTED,
        partition=partition,
        tolerated_failures=tolerated,
        analysis_failure="analysis check restarts failed: restarts = 1, limit 0"
        if cause is Cause.ANALYSIS
        else None,
        converging=kind is not Kind.REVERTING and canary is None and draw(st.booleans()),
    )
    health = {name: HEALTH[serving] for name, (_, serving, _) in zip(names, states, strict=True)}
    if record.converging:  # the service's other hosts, whose outages count too
        others = draw(st.lists(st.sampled_from(list(Serving)), max_size=3))
        record = record.model_copy(update={"others": tuple(f"x{i}" for i in range(len(others)))})
        health |= {f"x{i}": HEALTH[serving] for i, serving in enumerate(others)}
    if draw(st.booleans()):  # offline hosts never heard of: no health known at all
        health = {host: known for host, known in health.items() if known is not OFFLINE}
    return Scene(kind, cause, record, health)


class Stage(StrEnum):
    """Where a blue-green rollout stands (README: stage everywhere, switch, retire)."""

    STAGING = "staging"
    """Hosts past the partition wait to stage the new colour, and there is a free slot."""
    STAGED = "staged"
    """Every eligible host has staged (or failed): the switch is due."""
    SWITCHED = "switched"
    """Every host serves the new colour; the old one waits for remove_old_after."""
    MIXED = "mixed"
    """Any phases at all."""


BLUE_GREEN_STAGES = {
    Stage.STAGING: [HostPhase.READY] * 3
    + [HostPhase.UPDATING, HostPhase.STAGED, HostPhase.STAGED, HostPhase.FAILED],
    Stage.STAGED: [HostPhase.STAGED] * 5 + [HostPhase.FAILED, HostPhase.NOT_READY],
    Stage.SWITCHED: [HostPhase.DONE] * 5 + [HostPhase.RETIRED, HostPhase.FAILED],
    Stage.MIXED: BLUE_GREEN_PHASES,
}


@st.composite
def blue_green_scenes(draw: st.DrawFn) -> Scene:
    """A blue-green rollout after pre-flight, not stopped: staging, switching or retiring."""
    stage = draw(st.sampled_from(list(Stage)))
    size = draw(st.integers(min_value=1, max_value=MAX_HOSTS))
    names = [f"host-{index:03d}" for index in range(size)]
    states = _states(draw(st.binary(min_size=2 * size, max_size=2 * size)), BLUE_GREEN_PHASES)
    below = size if stage is Stage.MIXED else size - 1  # a stage has a host past it
    partition = draw(st.none() | st.integers(min_value=0, max_value=below))
    first = partition or 0
    phases = BLUE_GREEN_STAGES[stage]
    if stage is not Stage.MIXED:
        raw = draw(st.binary(min_size=size, max_size=size))
        for index in range(size):
            # Hosts below the partition stay on the old colour, ready for when it lowers.
            phase = phases[raw[index] % len(phases)] if index >= first else HostPhase.READY
            states[index] = (phase, states[index][1], states[index][2])
        pinned = draw(st.integers(min_value=first, max_value=size - 1))
        states[pinned] = (phases[0], Serving.SERVING, None)  # where the stage says it is
    staging = sum(1 for s in states if s[0] is HostPhase.UPDATING)
    failed = sum(1 for s in states if s[0] is HostPhase.FAILED)
    parallelism = draw(st.integers(min_value=1, max_value=6))
    if stage is Stage.STAGING:
        parallelism = staging + draw(st.integers(min_value=1, max_value=3))
    record = RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(
            strategy=Strategy.BLUE_GREEN,
            max_failure_ratio=1.0,
            min_ready=0,
            preflight_parallelism=parallelism,
            remove_old_after=draw(st.sampled_from([0.0, 60.0, 300.0])),
        ),
        target=TARGET,
        previous=PREVIOUS,
        hosts={
            name: HostRecord(
                phase=phase,
                since=PLAN_NOW,
                not_before=deferred,
                switched=phase in (HostPhase.DONE, HostPhase.RETIRING, HostPhase.RETIRED),
            )
            for name, (phase, _, deferred) in zip(names, states, strict=True)
        },
        status=RolloutStatus.RUNNING,
        created_at=PLAN_NOW - timedelta(hours=1),
        updated_at=PLAN_NOW,
        last_progress_at=PLAN_NOW,
        promoted=draw(st.booleans()),
        partition=partition,
        tolerated_failures=failed,
        colour="green",
        serving_colour=draw(st.sampled_from([None, "green"])),
        switched_at=PLAN_NOW - timedelta(seconds=100),
    )
    health = {name: HEALTH[serving] for name, (_, serving, _) in zip(names, states, strict=True)}
    return Scene(Kind.RUNNING, Cause.NONE, record, health, stage)
