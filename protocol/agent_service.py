"""The agent itself as a service: `fleetctl agent upgrade` rolls out the service named
``fleet-agent``, whose per-host step is a handoff between the agent and its successor
(node_agent/upgrade) instead of a container replacement."""

from __future__ import annotations

from protocol.spec import ExecProbe, HealthCheck, ServiceSpec

AGENT_SERVICE = "fleet-agent"
READY_DEADLINE = 60.0
"""Seconds a successor has to connect, check its host and say it is ready."""


def agent_upgrade_spec(
    image: str, min_healthy_time: float, ready_deadline: float = READY_DEADLINE
) -> ServiceSpec:
    """The agent service at ``image``: a successor has ``ready_deadline`` seconds to say
    it is ready, then must heartbeat healthy for ``min_healthy_time`` seconds after it
    took over before the old agent is removed."""
    return ServiceSpec(
        name=AGENT_SERVICE,
        image=image,
        health=HealthCheck(
            probe=ExecProbe(command=("fleet-agent", "health")),
            min_healthy_time=min_healthy_time,
            healthy_deadline=ready_deadline + min_healthy_time,
        ),
    )


def ready_deadline(spec: ServiceSpec) -> float:
    """How long a successor of ``spec`` has to say it is ready."""
    if spec.health is None:
        return READY_DEADLINE
    return max(1.0, spec.health.healthy_deadline - spec.health.min_healthy_time)
