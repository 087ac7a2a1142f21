"""fleetctl services: each declared service, and how far the fleet has converged to it."""

from __future__ import annotations

import dataclasses

import typer

from controller.cli.base import NatsOption, OutputOption, check_output, run_with_fleet
from controller.cli.render import to_json
from controller.cli.tables import OneLineTable, print_table
from controller.rollouts.service_summary import ServiceSummary
from controller.state.intents import Fleet
from controller.state.service_view import service_summaries
from protocol.models import utc_now

HEADERS = (
    *("service", "revision", "image", "matching", "converged"),
    *("missing", "outdated", "drifted", "ahead", "removing", "engine down", "rollout"),
)


def services(nats_url: NatsOption = None, output: OutputOption = "table") -> None:
    """List the declared services: the accepted revision, the live hosts its selector
    matches, how many run it (converged), lack it (missing), run an older revision
    (outdated), drifted by hand, run a newer one a failed rollout left (ahead), or
    still run it off the selector or after `delete service` (removing), or whose engine is
    down (judged once it answers)."""
    check_output(output)

    async def listed(fleet: Fleet) -> list[ServiceSummary]:
        return await service_summaries(fleet, utc_now())

    found = run_with_fleet(listed, nats_url)
    if output == "json":
        typer.echo(to_json([dataclasses.asdict(summary) for summary in found]))
        return
    table = OneLineTable(*HEADERS, title=f"{len(found)} service(s)", cut_first=("image",))
    for summary in found:
        rollout = summary.rollout or "-"
        if summary.rollout:
            rollout += f" ({summary.updating} updating)"
        table.add_row(
            summary.service + (" (deleted)" if summary.deleted else ""),
            str(summary.revision) if summary.revision else "-",
            summary.image or "-",
            *(
                str(n)
                for n in (
                    summary.matching,
                    summary.converged,
                    summary.missing,
                    summary.outdated,
                    summary.drifted,
                    summary.ahead,
                    summary.removing,
                    summary.engine_down,
                )
            ),
            rollout,
        )
    print_table(table)
