"""Rollout records and answers as tests build them: a web rollout to 1.1.0 of the hosts
given, and an agent's plain "done"."""

from __future__ import annotations

from datetime import datetime

from controller.rollouts.model import HostRecord, RolloutRecord, RolloutSpec, RolloutStatus
from protocol.models import OperationOutcome, OperationReply, ServiceStatus
from protocol.spec import ServiceSpec


def web_rollout(
    hosts: dict[str, HostRecord],
    at: datetime,
    status: RolloutStatus = RolloutStatus.PREFLIGHT,
) -> RolloutRecord:
    return RolloutRecord(
        id="web-r2",
        service="web",
        revision=2,
        spec=RolloutSpec(),
        target=ServiceSpec(name="web", image="127.0.0.1:5000/demo/web:1.1.0"),
        hosts=hosts,
        status=status,
        created_at=at,
        updated_at=at,
        last_progress_at=at,
    )


def done(host: str, command_id: str) -> OperationReply:
    return OperationReply(
        sender=host,
        in_reply_to=command_id,
        service="web",
        outcome=OperationOutcome.DONE,
        status=ServiceStatus(name="web"),
    )
