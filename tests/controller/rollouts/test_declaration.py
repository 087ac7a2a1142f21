"""A declaration file, and what applying it changes, by the README's rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from controller.rollouts.convergence import Desired, DriftPolicy
from controller.rollouts.declaration import Change, Declaration, change_of, host_changes
from controller.rollouts.model import RolloutSpec
from controller.rollouts.service_summary import summarise
from protocol.models import Drift, HostFacts
from protocol.spec import ServiceSpec
from tests.support.heartbeats import heartbeat

NOW = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
WEB = {"name": "web", "image": "registry.local/web:1.0"}
ACCEPTED = ServiceSpec(name="web", image=f"registry.local/web:1.0@sha256:{'a' * 64}")


def facts(
    host: str, role: str, applied: ServiceSpec | None, drift: Drift | None = None
) -> HostFacts:
    return heartbeat(host, {"role": role}, applied, NOW, drift)


def test_a_declaration_is_the_spec_file_with_a_selector_an_update_policy_and_a_drift_rule() -> None:
    declared = Declaration.from_document(
        {**WEB, "selector": {"role": "edge"}, "update": {"max_unavailable": 1}, "drift": "report"}
    )
    assert declared.spec == ServiceSpec(**WEB)
    assert declared.policy == RolloutSpec(max_unavailable=1, selector={"role": "edge"})
    assert declared.drift is DriftPolicy.REPORT
    assert Declaration.from_document(WEB).policy == RolloutSpec()


def test_a_bad_declaration_names_the_spec_field_as_the_file_has_it() -> None:
    with pytest.raises(ValidationError) as raised:
        Declaration.from_document({**WEB, "stop_grace_period": -1})
    assert [error["loc"] for error in raised.value.errors()] == [("stop_grace_period",)]
    with pytest.raises(ValidationError):
        Declaration.from_document({**WEB, "drift": "ignore"})


@pytest.mark.parametrize(
    ("document", "policy", "deleted", "change"),
    [
        (WEB, None, False, Change.ROLL),  # a first declaration of a service rolled out before
        (WEB, RolloutSpec(), False, Change.UNCHANGED),  # the tag the accepted digest pins
        ({**WEB, "image": "registry.local/web:1.1"}, RolloutSpec(), False, Change.ROLL),
        ({**WEB, "stop_grace_period": 3}, RolloutSpec(), False, Change.ROLL),
        ({**WEB, "update": {"max_unavailable": 1}}, RolloutSpec(), False, Change.CONFIGURE),
        ({**WEB, "selector": {"role": "db"}}, RolloutSpec(), False, Change.CONFIGURE),
        ({**WEB, "drift": "report"}, RolloutSpec(), False, Change.CONFIGURE),
        (WEB, RolloutSpec(), True, Change.CONFIGURE),  # declared again after a delete
    ],
    ids=[
        "undeclared",
        "same",
        "new image",
        "new setting",
        "new policy",
        "new selector",
        "new drift rule",
        "deleted",
    ],
)
def test_applying_changes_what_runs_only_when_the_image_or_settings_change(
    document: dict[str, object], policy: RolloutSpec | None, deleted: bool, change: Change
) -> None:
    declared = Declaration.from_document(document)
    expected = Change.CONFIGURE if policy is None else change
    assert change_of(declared, ACCEPTED, policy, DriftPolicy.REPAIR, deleted) is expected
    assert change_of(declared, None, policy, DriftPolicy.REPAIR) is Change.CREATE


def test_diff_names_per_host_deploy_update_remove_repair_and_nothing() -> None:
    newer = ServiceSpec(name="web", image="registry.local/web:1.1")
    declared = Declaration.from_document(
        {**WEB, "image": newer.image, "selector": {"role": "edge"}}
    )
    live = {
        "a": facts("a", "edge", None),
        "b": facts("b", "edge", ACCEPTED),
        "c": facts("c", "edge", newer),
        "d": facts("d", "edge", newer, Drift.REMOVED),
        "e": facts("e", "db", ACCEPTED),
        "f": facts("f", "db", None),
    }
    actions = {c.host: c.action for c in host_changes(declared, 2, live)}
    assert actions == {"a": "deploy", "b": "update", "c": "nothing", "d": "repair", "e": "remove"}


def test_services_counts_each_host_once_by_its_need() -> None:
    older = ServiceSpec(name="web", image="registry.local/web:0.9")
    desired = Desired("web", 2, ACCEPTED, {"role": "edge"}, DriftPolicy.REPAIR)
    live = {
        "a": facts("a", "edge", None),
        "b": facts("b", "edge", ACCEPTED),
        "c": facts("c", "edge", older),
        "d": facts("d", "edge", ACCEPTED, Drift.STOPPED),
        "e": facts("e", "db", ACCEPTED),
    }
    summary = summarise("web", desired, live, None)
    assert (summary.matching, summary.converged, summary.missing) == (4, 1, 1)
    assert (summary.outdated, summary.drifted, summary.removing) == (1, 1, 1)
    assert summarise("web", None, live, None).matching == 0
