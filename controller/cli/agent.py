"""fleetctl agent upgrade: the fleet updating its own agent, as a rollout like any other."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.base import (
    NatsOption,
    OutputOption,
    WatchOption,
    check_image,
    check_output,
    follow_rollout,
    report_started,
    run_with_fleet,
)
from controller.cli.rollout_flags import (
    CanaryOption,
    MaxUnavailableOption,
    ProgressDeadlineOption,
    SelectorOption,
    rollout_spec,
)
from controller.cli.typer_app import command_group
from controller.rollouts.model import RolloutRecord, Strategy
from controller.settings import load_settings
from controller.state.intents import Fleet
from protocol.agent_service import AGENT_SERVICE, READY_DEADLINE, agent_upgrade_spec

agent_app = command_group("The fleet's own agent.")


@agent_app.command("upgrade")
def agent_upgrade(
    image: Annotated[str, typer.Option(help="the new agent image (pinned to its digest)")],
    max_unavailable: MaxUnavailableOption = "25%",
    canary: CanaryOption = None,
    selector: SelectorOption = None,
    min_healthy_time: Annotated[
        float, typer.Option(help="seconds a successor heartbeats healthy before the old goes")
    ] = 10.0,
    ready_deadline: Annotated[
        float, typer.Option(help="seconds a successor has to connect and say it is ready")
    ] = READY_DEADLINE,
    progress_deadline: ProgressDeadlineOption = 600.0,
    skip_scan: Annotated[bool, typer.Option(help="do not run the vulnerability scanner")] = False,
    watch: WatchOption = False,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Upgrade the agent of every host (or --selector) to --image: a rolling rollout of the
    `fleet-agent` service (pre-flight, waves, budget, pause, abort, history) whose step
    on a host is a handoff. The running agent starts its successor from the new image
    beside itself; once the successor is ready the old one lets go of the host's commands
    and is stopped, and after --min-healthy-time of healthy heartbeats it is removed. A
    successor that is not ready, or fails in that time, is removed and the old agent
    serves on (rolled back). Managed containers are never restarted."""
    check_output(output)
    check_image(image)
    spec = rollout_spec(
        selector,
        strategy=Strategy.ROLLING,
        max_unavailable=max_unavailable,
        canary=canary,
        progress_deadline=progress_deadline,
        allow_downgrade=True,  # the agent's own version is not the demo's semver gate
        allow_major=True,
    )
    agent = agent_upgrade_spec(image, min_healthy_time, ready_deadline)

    async def start(fleet: Fleet) -> RolloutRecord:
        record, _ = await fleet.plan_rollout(AGENT_SERVICE, None, spec, agent)
        record = await fleet.vet(record, load_settings().vetter(), skip_scan=skip_scan)
        started = await fleet.start_rollout(record)
        return await follow_rollout(fleet, started.id, output) if watch else started

    report_started(run_with_fleet(start, nats_url), watch, output)
