"""fleetctl apply and diff: declare services; each change moves through the fleet as a
rollout under the declared policy, or (selector, policy, drift rule) with no restart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from controller.cli.base import (
    EXIT_INVALID,
    NatsOption,
    OutputOption,
    WatchOption,
    check_output,
    exit_for,
    fail,
    follow_rollout,
    load_app_declaration,
    load_declaration,
    run_with_fleet,
)
from controller.cli.render import to_json
from controller.cli.tables import OneLineTable, print_table
from controller.cli.typer_app import command_group
from controller.rollouts.convergence import live_facts, runs
from controller.rollouts.declaration import (
    Change,
    Declaration,
    HostChange,
    change_of,
    host_changes,
)
from controller.rollouts.model import RolloutRecord
from controller.settings import load_settings
from controller.state.intents import Fleet
from controller.state.store import read_hosts
from protocol.models import utc_now

FilesOption = Annotated[
    list[Path],
    typer.Option(
        "--file",
        "-f",
        help="a declaration (TOML or JSON), repeatable; with --app, a Compose file",
    ),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app", help="the file is a Compose file: declare it as the app NAME", metavar="NAME"
    ),
]
SelectorOption = Annotated[
    str | None,
    typer.Option(help="with --app: the hosts it runs on (key=value,...), instead of the file's"),
]


@dataclass
class Applied:
    service: str
    change: Change
    hosts: list[HostChange]
    rollout: RolloutRecord | None = None


def apply(
    files: FilesOption,
    dry_run: Annotated[
        bool, typer.Option(help="show what would change on each host; change nothing")
    ] = False,
    skip_scan: Annotated[
        bool, typer.Option(help="do not run the vulnerability scanner (recorded)")
    ] = False,
    watch: WatchOption = False,
    app: AppOption = None,
    selector: SelectorOption = None,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Create or change service declarations, or an app's (a Compose file, with --app).
    A change of what runs (image or settings) starts a rollout under the declared
    [update] policy (an app's: its x-fleetwave block); a change of only the selector,
    the policy or the drift rule takes effect without restarting anything."""
    check_output(output)
    declarations = _declarations(files, app, selector)
    results = run_with_fleet(
        lambda fleet: _apply_all(fleet, declarations, dry_run, skip_scan, watch, output),
        nats_url,
    )
    _report(results, dry_run, output)
    for result in results:
        if watch and result.rollout is not None:
            exit_for(result.rollout)


def diff(
    files: FilesOption,
    app: AppOption = None,
    selector: SelectorOption = None,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Show, per host, what `apply` of these declarations would change (like
    `kubectl diff`): deploy, update, repair, remove (off the selector), or nothing."""
    apply(files, dry_run=True, app=app, selector=selector, nats_url=nats_url, output=output)


def _declarations(files: list[Path], app: str | None, selector: str | None) -> list[Declaration]:
    if app is None:
        if selector is not None:
            fail("--selector goes with --app (a service's file has its [selector])", EXIT_INVALID)
        return [load_declaration(path) for path in files]
    if len(files) != 1:
        fail("--app takes one Compose file (-f FILE)", EXIT_INVALID)
    return [load_app_declaration(files[0], app, selector)]


async def _apply_all(
    fleet: Fleet,
    declarations: list[Declaration],
    dry_run: bool,
    skip_scan: bool,
    watch: bool,
    output: str,
) -> list[Applied]:
    now = utc_now()
    timeout = timedelta(seconds=fleet.host_timeout)
    facts = await read_hosts(fleet.hosts_kv)
    live = live_facts(facts, now, timeout)
    results = []
    for declaration in declarations:
        service = declaration.spec.name
        history, _ = await fleet.services.get(service)
        change = change_of(
            declaration, history.latest_spec, history.policy, history.drift, history.deleted
        )
        result = Applied(service, change, host_changes(declaration, history.next_revision, live))
        results.append(result)
        if dry_run or change is Change.UNCHANGED:
            continue
        if change is Change.CONFIGURE:
            await fleet.services.declare(service, declaration.policy, declaration.drift)
            continue
        record, _ = await fleet.plan_rollout(service, None, declaration.policy, declaration.spec)
        record = await fleet.vet(record, load_settings().vetter(), skip_scan=skip_scan)
        result.rollout = await fleet.start_rollout(record)
        await fleet.services.declare(service, declaration.policy, declaration.drift)
        if watch:
            result.rollout = await follow_rollout(fleet, result.rollout.id, output)
    return results


SAID = {
    Change.CREATE: "created",
    Change.ROLL: "changed",
    Change.CONFIGURE: "configured (nothing restarts)",
    Change.UNCHANGED: "unchanged",
}


def _report(results: list[Applied], dry_run: bool, output: str) -> None:
    if output == "json":
        typer.echo(
            to_json(
                [
                    {
                        "service": r.service,
                        "change": r.change.value,
                        "rollout": r.rollout.id if r.rollout else None,
                        "hosts": [h.__dict__ for h in r.hosts],
                    }
                    for r in results
                ]
            )
        )
        return
    for result in results:
        said = SAID[result.change]
        if dry_run:
            table = OneLineTable(
                "host", "action", "detail", title=f"{result.service}: would be {said}"
            )
            for host in result.hosts:
                table.add_row(host.host, host.action, host.detail)
            print_table(table)
        elif result.rollout is not None:
            typer.echo(
                f"{result.service}: {said}; rollout {result.rollout.id} "
                f"{result.rollout.status.value} on {len(result.rollout.hosts)} host(s)"
            )
        else:
            typer.echo(f"{result.service}: {said}")


delete_app = command_group("Delete what was declared (its history is kept).")


@delete_app.command("service")
def delete_service(
    service: str,
    keep_containers: Annotated[
        bool, typer.Option("--keep-containers", help="stop managing it; leave it running")
    ] = False,
    nats_url: NatsOption = None,
) -> None:
    """Take SERVICE off every host, paced by its declared max_unavailable (the
    controller does it; `fleetctl services` shows how far it got). Its revisions are
    kept: `apply` or `rollout start` declares it again."""

    async def delete(fleet: Fleet) -> int:
        await fleet.history(service)  # not found: exit 4
        await fleet.services.delete(service, keep_containers=keep_containers)
        now = utc_now()
        timeout = timedelta(seconds=fleet.host_timeout)
        facts = await read_hosts(fleet.hosts_kv)
        return sum(1 for f in live_facts(facts, now, timeout).values() if runs(f, service))

    running = run_with_fleet(delete, nats_url)
    if keep_containers:
        typer.echo(f"{service}: deleted; left running, unmanaged, on {running} host(s)")
    else:
        typer.echo(f"{service}: deleted; the controller removes it from {running} host(s)")
