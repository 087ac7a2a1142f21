"""A service declaration: the spec, the hosts it belongs on, how it is updated, and what
drift means for it. One TOML (or JSON) file per service, read by `fleetctl apply`.

The file is the spec file `rollout start --spec` has always read, with three optional
additions: a ``[selector]`` table of host labels, an ``[update]`` table with the rollout
policy (the knobs of `rollout start`), and ``drift = "repair" | "report"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field

from controller.rollouts.convergence import Desired, DriftPolicy, Need, matches, needs
from controller.rollouts.model import RolloutSpec
from controller.rollouts.workload import Workload, as_declared
from protocol.app import AppSpec
from protocol.base import FrozenModel
from protocol.models import HostFacts
from protocol.spec import ServiceSpec

DECLARATION_KEYS = ("selector", "update", "drift")


class Declaration(FrozenModel):
    spec: Workload
    selector: dict[str, str] = Field(default_factory=dict)
    update: RolloutSpec = RolloutSpec()
    drift: DriftPolicy = DriftPolicy.REPAIR

    @classmethod
    def from_document(cls, data: Mapping[str, Any]) -> Declaration:
        """From a parsed file: the declaration's own keys, and the spec's everything else."""
        # The spec on its own first: its errors name its fields as they are in the file.
        spec = ServiceSpec.model_validate(
            {k: v for k, v in data.items() if k not in DECLARATION_KEYS}
        )
        declared = {k: data[k] for k in DECLARATION_KEYS if k in data}
        return cls.model_validate({"spec": spec, **declared})

    @classmethod
    def of_app(cls, app: AppSpec, extension: Mapping[str, Any]) -> Declaration:
        """An app from a Compose file, with its ``x-fleetwave`` block: the declaration's
        own keys (selector, update, drift), and nothing else."""
        unknown = sorted(set(extension) - set(DECLARATION_KEYS))
        if unknown:
            raise ValueError(
                f"x-fleetwave.{unknown[0]}: not a key of Fleetwave's "
                f"(it takes {', '.join(DECLARATION_KEYS)})"
            )
        declared = cls.model_validate({"spec": app, **extension})
        if declared.update.analysis:
            raise ValueError(
                "x-fleetwave.update.analysis: analysis checks are for single services "
                "(a canary of an app waits for promote, or auto_promote_after)"
            )
        return declared

    @property
    def policy(self) -> RolloutSpec:
        """The update policy as stored, with the declaration's selector in it."""
        return self.update.model_copy(update={"selector": dict(self.selector)})


class Change(StrEnum):
    CREATE = "create"
    """A service never rolled out: its first rollout starts."""
    ROLL = "roll"
    """What runs changed (image or settings): a rollout under the declared policy."""
    CONFIGURE = "configure"
    """Only the selector, the policy or the drift rule changed: nothing restarts."""
    UNCHANGED = "unchanged"


def change_of(
    declaration: Declaration,
    accepted: Workload | None,
    policy: RolloutSpec | None,
    drift: DriftPolicy,
    deleted: bool = False,
) -> Change:
    if accepted is None:
        return Change.CREATE
    wanted, was = as_declared(declaration.spec, accepted)
    if wanted != was:
        return Change.ROLL
    if deleted or policy != declaration.policy or drift is not declaration.drift:
        return Change.CONFIGURE  # a deleted service declared again: deployed by convergence
    return Change.UNCHANGED


@dataclass(frozen=True)
class HostChange:
    host: str
    action: str
    """deploy, update, repair, remove (off the selector), or nothing."""
    detail: str


ACTION_OF_NEED = {
    Need.DEPLOY: "deploy",
    Need.UPDATE: "update",
    Need.REPAIR: "repair",
    Need.REPORT: "nothing",
    Need.AHEAD: "update",
    Need.ENGINE_DOWN: "wait",
}


def host_changes(
    declaration: Declaration, revision: int, live: Mapping[str, HostFacts]
) -> list[HostChange]:
    """What applying the declaration would do to each live host, in host order."""
    desired = Desired(
        service=declaration.spec.name,
        revision=revision,
        spec=declaration.spec,
        selector=declaration.selector,
        drift=declaration.drift,
    )
    found = {need.host: need for need in needs(desired, live)}
    changes = []
    for host in sorted(live):
        runs_it = any(s.name == desired.service for s in live[host].services)
        if not matches(live[host], desired.selector):
            if runs_it:
                changes.append(HostChange(host, "remove", "runs it, off the selector"))
            continue
        need = found.get(host)
        if need is None:
            changes.append(HostChange(host, "nothing", "already runs it"))
        else:
            changes.append(HostChange(host, ACTION_OF_NEED[need.need], need.detail))
    return changes
