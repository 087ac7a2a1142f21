"""A rollout as it is stored in KV ``fleet_rollouts``: the operator's spec and its progress.

The record is the single source of truth for one rollout. The controller changes it only
by compare-and-set on the KV entry's revision, and fleetctl's verbs (pause, resume,
promote, abort, partition) set intent fields on it the same way, so a restarted or second
controller picks up exactly where the last write left off.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator

from controller.rollouts.host_index import HostIndex
from controller.rollouts.workload import Workload, describe, member_images, specs_of
from protocol import subjects
from protocol.base import FrozenModel, HostId, ServiceName
from protocol.config_files import ConfigContent, ConfigDocument, ConfigName
from protocol.models import Reason, RolloutEvent
from protocol.spec import Colour

_AMOUNT = re.compile(r"^(\d+)(%?)$")

Amount = int | str
"""A count (3) or a percentage of the target hosts ("25%")."""


def validate_amount(value: Amount) -> Amount:
    text = str(value).strip()
    match = _AMOUNT.match(text)
    if match is None:
        raise ValueError(f"{value!r} is neither a count nor a percentage like 25%")
    if match.group(2) and int(match.group(1)) > 100:
        raise ValueError(f"{value!r} is more than 100%")
    return text if match.group(2) else int(match.group(1))


def resolve_amount(value: Amount, total: int, *, round_up: bool) -> int:
    """A count as is; a percentage of ``total``, rounded like Kubernetes does."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    exact = total * percent / 100
    return math.ceil(exact) if round_up else math.floor(exact)


class Strategy(StrEnum):
    ROLLING = "rolling"
    RECREATE = "recreate"
    CANARY = "canary"
    PARTITION = "partition"
    BLUE_GREEN = "blue-green"


class FailureAction(StrEnum):
    PAUSE = "pause"
    REVERT = "revert"


class AnalysisMetric(StrEnum):
    """What a check measures, over the new version's containers on the updated hosts."""

    RESTARTS = "restarts"
    """Restarts by the engine's restart policy, summed."""
    UNHEALTHY = "unhealthy"
    """Containers whose Docker healthcheck says unhealthy."""
    MEMORY_RATIO = "memory_ratio"
    """Median memory over the old version's median when the rollout began."""
    MEMORY_BYTES = "memory_bytes"
    """The largest container's memory."""
    CPU_PERCENT = "cpu_percent"
    """The busiest container's CPU, percent of one core."""


_CHECK = re.compile(r"^(?:([A-Za-z0-9_.-]{1,64})=)?([a-z_]+)\s*<=\s*([0-9]+(?:\.[0-9]+)?)$")


class AnalysisCheck(FrozenModel):
    """Passes while ``metric <= max``; a failure stops the rollout (failure_action)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    metric: AnalysisMetric
    max: Annotated[float, Field(ge=0)]

    @classmethod
    def parse(cls, text: str) -> AnalysisCheck:
        """``restarts<=0``, ``memory=memory_ratio<=1.5`` (an optional name, then the rule)."""
        match = _CHECK.match(text.strip())
        if match is None:
            raise ValueError(f"check {text!r}: write it as [name=]metric<=number")
        name, metric, limit = match.groups()
        try:
            kind = AnalysisMetric(metric)
        except ValueError:
            known = ", ".join(m.value for m in AnalysisMetric)
            raise ValueError(
                f"check {text!r}: unknown metric {metric!r} (one of {known})"
            ) from None
        return cls(name=name or kind.value, metric=kind, max=float(limit))

    def describe(self) -> str:
        return f"{self.metric.value} <= {self.max:g}"


class RolloutSpec(FrozenModel):
    """How to roll: the operator's knobs (fleetctl rollout start flags)."""

    strategy: Strategy = Strategy.ROLLING
    max_unavailable: Amount = "25%"
    max_surge: Amount = 0
    canary: Amount | None = None
    """Size of the first wave; the rollout then waits for promote."""
    auto_promote_after: Annotated[float, Field(gt=0)] | None = None
    """Seconds after the canary wave finished with no failure before promoting by itself."""
    partition: Annotated[int, Field(ge=0)] | None = None
    """Only hosts at or past this ordinal (in host order) are updated."""
    selector: dict[str, str] = Field(default_factory=dict)
    min_healthy_time: Annotated[float, Field(ge=0)] | None = None
    """Overrides the service's own min_healthy_time when set."""
    progress_deadline: Annotated[float, Field(gt=0)] = 600.0
    max_failure_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0
    failure_action: FailureAction = FailureAction.PAUSE
    min_ready: Amount = "100%"
    preflight_parallelism: Annotated[int, Field(ge=1)] = 50
    remove_old_after: Annotated[float, Field(ge=0)] = 300.0
    """Blue-green: how long the old colour is kept after the switch (a switch back is
    instant until then); promote removes it at once."""
    allow_downgrade: bool = False
    allow_major: bool = False
    analysis: tuple[AnalysisCheck, ...] = ()
    """Checks evaluated from the metrics stream once hosts run the new version."""

    @field_validator("max_unavailable", "max_surge", "min_ready", "canary", mode="before")
    @classmethod
    def _amounts(cls, value: Amount | None) -> Amount | None:
        return None if value is None else validate_amount(value)


class HostPhase(StrEnum):
    PENDING = "pending"
    """Not checked yet."""
    PREPARING = "preparing"
    READY = "ready"
    """Pre-flight passed and the image is pulled; waiting for its turn."""
    NOT_READY = "not_ready"
    UPDATING = "updating"
    """Replacing the container; in blue-green, staging the new colour next to the old."""
    STAGED = "staged"
    """Blue-green: the new colour runs and is verified; the old one still serves."""
    SWITCHING = "switching"
    DONE = "done"
    """Serving the new version (in blue-green, the old colour is still kept)."""
    RETIRING = "retiring"
    RETIRED = "retired"
    """Blue-green: serving the new colour, and the old one is removed."""
    FAILED = "failed"
    """The agent could not update it (and restored the old version)."""
    REVERTING = "reverting"
    REVERTED = "reverted"


IN_FLIGHT = frozenset(
    {
        HostPhase.PREPARING,
        HostPhase.UPDATING,
        HostPhase.SWITCHING,
        HostPhase.RETIRING,
        HostPhase.REVERTING,
    }
)
UPDATED = frozenset({HostPhase.DONE, HostPhase.RETIRING, HostPhase.RETIRED})
"""Hosts that serve the new version."""


class RolloutStatus(StrEnum):
    PREFLIGHT = "preflight"
    RUNNING = "running"
    AWAITING_PROMOTION = "awaiting_promotion"
    HELD = "held"
    """Every host past the partition is done; lowering the partition continues."""
    SWITCHING = "switching"
    SWITCHED = "switched"
    """Blue-green: every host serves the new colour; the old one waits to be removed."""
    PAUSED = "paused"
    REVERTING = "reverting"
    COMPLETE = "complete"
    FAILED = "failed"
    REVERTED = "reverted"
    ABORTED = "aborted"


TERMINAL = frozenset(
    {RolloutStatus.COMPLETE, RolloutStatus.FAILED, RolloutStatus.REVERTED, RolloutStatus.ABORTED}
)


class HostRecord(FrozenModel):
    phase: HostPhase = HostPhase.PENDING
    since: AwareDatetime
    command_id: str | None = None
    """The id of the command in flight; resent as is after a controller restart."""
    attempts: Annotated[int, Field(ge=0)] = 0
    not_before: AwareDatetime | None = None
    """Do not send this host anything before then (a deferred or busy reply)."""
    detail: Annotated[str, Field(max_length=8192)] = ""
    reasons: tuple[Reason, ...] = ()
    digest: str | None = None
    digests: dict[str, str] = Field(default_factory=dict)
    """An app's: each member's digest, as its pre-flight pulled it (by member name)."""
    switched: bool = False
    """Blue-green: this host serves the new colour (so reverting means switching back)."""
    no_heartbeat_since: AwareDatetime | None = None
    """Set while the host's heartbeat is older than the host timeout: its last heartbeat."""
    unanswered_since: AwareDatetime | None = None
    """Set while the command in flight goes unanswered (no agent, or no answer in time):
    when that was first so. An answer, or news of its progress, clears it."""

    @property
    def offline_since(self) -> AwareDatetime | None:
        """Since when the controller has not heard from the host, as it last wrote it."""
        known = [m for m in (self.no_heartbeat_since, self.unanswered_since) if m is not None]
        return min(known) if known else None


ScanVerdict = Literal["passed", "skipped", "off"]


class Vetting(FrozenModel):
    """What was checked before an image rollout started, kept in its record and history."""

    requested: str
    """The image as the operator named it, before pinning."""
    digest: str | None = None
    """The digest the tag was pinned to; every host pulls exactly this."""
    scan: ScanVerdict = "off"
    """``skipped``: the operator gave --skip-scan; ``off``: no scanner is configured."""
    scan_findings: Annotated[int, Field(ge=0)] = 0
    """Findings below the threshold, which did not stop the rollout."""
    policies: tuple[str, ...] = ()
    """The policy files the spec passed."""

    def summary(self) -> str:
        scan = {"passed": "scanned", "skipped": "SCAN SKIPPED", "off": "no scan"}[self.scan]
        policies = f"{len(self.policies)} policies" if self.policies else "no policies"
        return f"{scan}, {policies}" + ("" if self.digest else ", UNPINNED")


class ConfigTarget(FrozenModel):
    """A config rollout: one file's next version, host by host, through the planner.

    The new version is stored to KV fleet_config only when the rollout completes, so
    the agents' watchers do not race ahead of the pace; a revert sends ``previous``.
    """

    name: ConfigName
    document: ConfigDocument
    previous: ConfigDocument | None = None
    base_revision: int | None = None
    """The fleet_config revision the new version follows (None: the file is new)."""

    def content_for(
        self, host: str, labels: dict[str, str], *, reverting: bool
    ) -> tuple[int, ConfigContent | None]:
        """(version, content) a host gets; reverting a file's first version removes it."""
        document = self.previous if reverting else self.document
        if document is None:
            return 0, None
        return document.version, document.for_host(host, labels)


class RolloutRecord(FrozenModel):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
    service: ServiceName
    revision: Annotated[int, Field(ge=1)]
    spec: RolloutSpec
    target: Workload
    previous: Workload | None = None
    hosts: dict[HostId, HostRecord]
    status: RolloutStatus = RolloutStatus.PREFLIGHT
    reason: Annotated[str, Field(max_length=16384)] = ""
    created_at: AwareDatetime
    updated_at: AwareDatetime
    last_progress_at: AwareDatetime
    canary_completed_at: AwareDatetime | None = None
    colour: Colour | None = None
    """Blue-green: the colour this rollout stages the new version in."""
    serving_colour: Colour | None = None
    """Blue-green: the colour the service's traffic should go to, as this rollout decided;
    None until the switch. The controller keeps the service's KV record in step."""
    switched_at: AwareDatetime | None = None
    in_colour: Colour | None = None
    """Any other rollout of a service a blue-green rollout switched to a colour: every
    spec it applies (new, or previous when reverting) runs in that colour, in place."""
    # Operator intent, set by fleetctl:
    paused: bool = False
    promoted: bool = False
    aborted: bool = False
    partition: Annotated[int, Field(ge=0)] | None = None
    tolerated_failures: Annotated[int, Field(ge=0)] = 0
    """Failures the operator accepted by resuming; only failures past these count."""
    # Canary analysis, written by the controller:
    analysis_failure: Annotated[str, Field(max_length=4096)] | None = None
    """The first failed check, with its measured value; it stops the rollout."""
    analysis_overridden: bool = False
    """The operator resumed after a failed check: the checks are not evaluated any more."""
    analysis_note: Annotated[str, Field(max_length=4096)] | None = None
    """While the checks have nothing to measure: why ("analysis has no data: ...").
    Auto-promotion waits for data: a canary nobody could measure is not promoted."""
    baseline_memory: Annotated[float, Field(ge=0)] | None = None
    """The old version's median memory (bytes), measured when the rollout began."""
    config: ConfigTarget | None = None
    """Set for a config rollout: hosts get this file, and ``target`` is the running spec."""
    vetting: Vetting | None = None
    """An image rollout's checks before it started (None: from before vetting, or undo)."""
    member_vettings: dict[str, Vetting] = Field(default_factory=dict)
    """An app's: each member's checks, by member name."""
    converging: bool = False
    """Started by the controller to bring hosts to the accepted revision (convergence)."""
    removing: bool = False
    """Removes the service from its hosts (off the selector, or the service deleted)."""
    others: tuple[HostId, ...] = ()
    """A convergence rollout: the service's other matching hosts, whose outages count
    against its budget too (it updates a few hosts of a larger fleet)."""

    @property
    def what(self) -> str:
        """What the rollout rolls out, for people: an image, or a config file's version."""
        if self.config is not None:
            return f"config {self.config.name} v{self.config.document.version}"
        return describe(self.target)

    def event(self, status: str | None = None, reason: str | None = None) -> RolloutEvent:
        """The rollout_event for fleet.evt.controller.rollout: its status (or ``status``,
        such as ``refused`` for one that never started) and how far it got."""
        return RolloutEvent(
            sender=subjects.CONTROLLER_SENDER,
            rollout_id=self.id,
            service=self.service,
            revision=self.revision,
            status=status or self.status.value,
            reason=(self.reason if reason is None else reason)[:16000],
            image=specs_of(self.target)[0].image,
            hosts_done=self.count(*UPDATED),
            hosts_total=len(self.hosts),
            members=member_images(self.target),
        )

    def ordered_hosts(self) -> tuple[str, ...]:
        """The deterministic host order: sorted ids, the same after any restart."""
        return self._index().ordered

    def in_phase(self, phase: HostPhase) -> tuple[str, ...]:
        """The hosts in ``phase``, in host order."""
        return self._index().by_phase.get(phase, ())

    def _index(self) -> HostIndex:
        """The hosts by phase, made once per hosts map: the planner asks a 5,000-host
        record for counts and orders many times a pass. Kept beside the fields (not one
        of them), and made again when a copy of the record has other hosts."""
        found = self.__dict__.get("_host_index")
        index = found if isinstance(found, HostIndex) else None
        if index is None or index.hosts is not self.hosts:
            index = HostIndex.of(self.hosts, index)
            self.__dict__["_host_index"] = index
        return index

    @property
    def blue_green(self) -> bool:
        return self.spec.strategy is Strategy.BLUE_GREEN

    @property
    def new_colour(self) -> Colour:
        """Blue-green: the colour the new version is staged in (set when the rollout starts)."""
        return self.colour or "green"

    def count(self, *phases: HostPhase) -> int:
        by_phase = self._index().by_phase
        return sum(len(by_phase.get(phase, ())) for phase in set(phases))

    def with_host(self, host: str, record: HostRecord) -> RolloutRecord:
        return self.model_copy(update={"hosts": {**self.hosts, host: record}})


Change = Callable[[RolloutRecord], RolloutRecord]
"""A change to a rollout's record, made by the leader or folded into its next pass."""


def rollout_id(service: str, revision: int) -> str:
    return f"{service}-r{revision}"


def config_rollout_id(service: str, name: str, version: int) -> str:
    return f"{service}-config-{name.replace('.', '_')}-v{version}"
