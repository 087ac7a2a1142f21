"""fleetctl rollout: start, follow and steer rollouts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from controller.cli import render
from controller.cli.base import (
    EXIT_FAILED,
    EXIT_INVALID,
    NatsOption,
    OutputOption,
    WatchOption,
    check_image,
    check_output,
    check_strategy,
    exit_for,
    fail,
    follow_rollout,
    invalid_flags,
    load_app_declaration,
    load_declaration,
    report_started,
    run_with_fleet,
)
from controller.cli.rollout_flags import (
    AutoPromoteOption,
    CanaryOption,
    CheckOption,
    FailureActionOption,
    MaxFailureRatioOption,
    MaxUnavailableOption,
    PartitionOption,
    ProgressDeadlineOption,
    SelectorOption,
    rollout_spec,
)
from controller.cli.tables import print_table
from controller.cli.typer_app import command_group
from controller.rollouts.model import (
    FailureAction,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
    Strategy,
)
from controller.rollouts.workload import Workload, describe
from controller.settings import load_settings
from controller.state.intents import Fleet
from protocol.models import utc_now
from protocol.spec import ServiceSpec

rollout_app = command_group("Start, follow and steer rollouts.")


@rollout_app.command("start")
def rollout_start(
    service: str,
    image: Annotated[str | None, typer.Option(help="the new image reference")] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="service spec (JSON or TOML) for a first rollout")
    ] = None,
    compose_file: Annotated[
        Path | None,
        typer.Option("--compose", help="an app's Compose file (SERVICE is the app's name)"),
    ] = None,
    strategy: Annotated[Strategy, typer.Option()] = Strategy.ROLLING,
    max_unavailable: MaxUnavailableOption = "25%",
    max_surge: Annotated[str, typer.Option(help="count or percentage")] = "0",
    canary: CanaryOption = None,
    auto_promote_after: AutoPromoteOption = None,
    partition: PartitionOption = None,
    selector: SelectorOption = None,
    max_failure_ratio: MaxFailureRatioOption = 0.0,
    failure_action: FailureActionOption = FailureAction.PAUSE,
    min_healthy_time: Annotated[float | None, typer.Option(help="seconds")] = None,
    progress_deadline: ProgressDeadlineOption = 600.0,
    min_ready: Annotated[str, typer.Option(help="pre-flight: count or percentage")] = "100%",
    remove_old_after: Annotated[
        float, typer.Option(help="blue-green: seconds the old colour is kept after the switch")
    ] = 300.0,
    allow_downgrade: bool = False,
    allow_major: bool = False,
    check: CheckOption = None,
    dry_run: Annotated[
        bool, typer.Option(help="show pre-flight and waves; change nothing")
    ] = False,
    skip_scan: Annotated[
        bool,
        typer.Option(help="do not run the vulnerability scanner (recorded in the history)"),
    ] = False,
    watch: WatchOption = False,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Start a rollout of SERVICE to --image, or of an app to its --compose file (the
    controller drives it).

    The image is vetted first: its registry must be allowed, its tag is pinned to a
    digest, the scanner and the Rego policies run if configured (FLEET_* settings)."""
    check_output(output)
    if strategy is Strategy.BLUE_GREEN and (canary is not None or partition is not None):
        fail("blue-green switches every host at once: no --canary or --partition", EXIT_INVALID)
    check_strategy(strategy, canary, partition)
    check_image(image)
    override = _workload_from_file(service, spec_file, compose_file)
    if image is None and override is None:
        fail(
            "give --image, --spec for a service's first rollout or --compose for an app's",
            EXIT_INVALID,
        )
    spec = rollout_spec(
        selector,
        check,
        strategy=strategy,
        max_unavailable=max_unavailable,
        max_surge=max_surge,
        canary=canary,
        auto_promote_after=auto_promote_after,
        partition=partition,
        max_failure_ratio=max_failure_ratio,
        failure_action=failure_action,
        min_healthy_time=min_healthy_time,
        progress_deadline=progress_deadline,
        min_ready=min_ready,
        remove_old_after=remove_old_after,
        allow_downgrade=allow_downgrade,
        allow_major=allow_major,
    )

    async def start(fleet: Fleet) -> RolloutRecord | None:
        record, _ = await fleet.plan_rollout(service, image, spec, override)
        record = await fleet.vet(record, load_settings().vetter(), skip_scan=skip_scan)
        if dry_run:
            await _show_dry_run(fleet, record, output)
            return None
        started = await fleet.start_rollout(record)
        if not watch:
            return started
        return await follow_rollout(fleet, started.id, output)

    record = run_with_fleet(start, nats_url)
    if record is not None:
        report_started(record, watch, output)


def _workload_from_file(
    service: str, spec_file: Path | None, compose_file: Path | None
) -> Workload | None:
    """The spec of --spec or the app of --compose. Their file's selector and update policy
    are for `fleetctl apply`: this rollout takes the flags', and says so."""
    if spec_file is not None and compose_file is not None:
        fail("give --spec (a service) or --compose (an app), not both", EXIT_INVALID)
    if spec_file is not None:
        path, declaration = spec_file, load_declaration(spec_file)
        if not isinstance(declaration.spec, ServiceSpec):
            fail(f"{path}: declares an app: give it with --compose", EXIT_INVALID)
    elif compose_file is not None:
        path, declaration = compose_file, load_app_declaration(compose_file, service, None)
    else:
        return None
    if declaration.selector or declaration.update != RolloutSpec():
        typer.echo(
            f"fleetctl: warning: {path}: its selector and update policy are for fleetctl "
            "apply; this rollout takes the flags'",
            err=True,
        )
    return declaration.spec


async def _show_dry_run(fleet: Fleet, record: RolloutRecord, output: str) -> None:
    result = await fleet.dry_run(record)
    if output == "json":
        typer.echo(render.to_json(result.__dict__ | {"record": record.model_dump()}))
    else:
        render.dry_run_view(result, Console())


@rollout_app.command("status")
def rollout_status(
    target: Annotated[str | None, typer.Argument(help="rollout id or service")] = None,
    watch: WatchOption = False,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Show a rollout (or every rollout); -w follows it until it settles."""
    check_output(output)

    async def status(fleet: Fleet) -> RolloutRecord | list[RolloutRecord]:
        if target is None:
            return await fleet.rollouts.all()
        if watch:
            return await follow_rollout(fleet, (await fleet.rollout(target)).id, output)
        return await fleet.rollout(target)

    result = run_with_fleet(status, nats_url)
    if isinstance(result, list):
        if output == "json":
            typer.echo(render.to_json([r.model_dump(mode="json") for r in result]))
        else:
            print_table(render.rollouts_table(result))
        return
    if not watch:
        if output == "json":
            typer.echo(render.rollout_json(result, utc_now()))
        else:
            render.print_rollout(result, Console())
    exit_for(result) if watch else None


def _intent(
    verb: str,
    output: str,
    nats_url: list[str] | None,
    work: Callable[[Fleet], Awaitable[RolloutRecord]],
) -> None:
    check_output(output)
    record = run_with_fleet(work, nats_url)
    if output == "json":
        typer.echo(render.to_json(record.model_dump(mode="json")))
    else:
        typer.echo(f"{record.id}: {verb} recorded (status {record.status.value})")


@rollout_app.command("pause")
def rollout_pause(target: str, nats_url: NatsOption = None, output: OutputOption = "table") -> None:
    """Start no new host; hosts in flight finish."""
    _intent("pause", output, nats_url, lambda fleet: fleet.pause(target))


@rollout_app.command("resume")
def rollout_resume(
    target: str, nats_url: NatsOption = None, output: OutputOption = "table"
) -> None:
    """Continue a paused rollout (failures so far are accepted)."""
    _intent("resume", output, nats_url, lambda fleet: fleet.resume(target))


@rollout_app.command("promote")
def rollout_promote(
    target: str, nats_url: NatsOption = None, output: OutputOption = "table"
) -> None:
    """Let a canary rollout go past its canary wave; in blue-green, remove the old colour now."""
    _intent("promote", output, nats_url, lambda fleet: fleet.promote(target))


@rollout_app.command("abort")
def rollout_abort(target: str, nats_url: NatsOption = None, output: OutputOption = "table") -> None:
    """Stop and put every host this rollout updated back (blue-green: switch back)."""
    _intent("abort", output, nats_url, lambda fleet: fleet.abort(target))


@rollout_app.command("partition")
def rollout_partition(
    target: str,
    partition: int,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Move the partition: hosts at or past ordinal PARTITION are updated."""
    if partition < 0:
        fail("PARTITION: an ordinal, 0 or more", EXIT_INVALID)
    _intent(
        f"partition {partition}",
        output,
        nats_url,
        lambda fleet: fleet.set_partition(target, partition),
    )


@rollout_app.command("undo")
def rollout_undo(
    service: str,
    to_revision: Annotated[int | None, typer.Option(help="default: the one before current")] = None,
    strategy: Annotated[Strategy, typer.Option()] = Strategy.ROLLING,
    max_unavailable: Annotated[str, typer.Option()] = "25%",
    watch: WatchOption = False,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Roll SERVICE back to an earlier kept revision (a new rollout, a new revision).

    While a blue-green rollout still keeps the old colour, undo is a switch back instead:
    it aborts that rollout, which takes seconds.
    """
    check_output(output)
    try:
        spec = RolloutSpec(
            strategy=strategy,
            max_unavailable=max_unavailable,
            allow_downgrade=True,
            allow_major=True,
        )
    except ValidationError as exc:
        invalid_flags(exc)

    async def undo(fleet: Fleet) -> tuple[RolloutRecord, bool]:
        switching_back = await fleet.switch_back(service) if to_revision is None else None
        if switching_back is not None:
            record = switching_back
        else:
            record = await fleet.start_rollout(await fleet.undo_record(service, to_revision, spec))
        if watch:
            record = await follow_rollout(fleet, record.id, output)
        return record, switching_back is not None

    record, switched_back = run_with_fleet(undo, nats_url)
    if watch:
        if switched_back:
            raise typer.Exit(0 if record.status is RolloutStatus.ABORTED else EXIT_FAILED)
        exit_for(record)
    if output == "json":
        typer.echo(render.to_json(record.model_dump(mode="json")))
    elif switched_back:
        typer.echo(f"{record.id}: switching {service} back to its previous colour")
    else:
        typer.echo(f"rollout {record.id} started: {service} back to {describe(record.target)}")


@rollout_app.command("history")
def rollout_history(
    service: str, nats_url: NatsOption = None, output: OutputOption = "table"
) -> None:
    """The kept revisions of SERVICE and the rollout of each."""
    check_output(output)

    async def history(fleet: Fleet) -> tuple[Any, dict[str, RolloutRecord]]:
        record = await fleet.history(service)
        rollouts = {r.id: r for r in await fleet.rollouts.all() if r.service == service}
        return record, rollouts

    record, rollouts = run_with_fleet(history, nats_url)
    if output == "json":
        # Each rollout's status and vetting (pinned digest, scan verdict, policies).
        typer.echo(
            render.to_json(
                record.model_dump(mode="json")
                | {
                    "rollouts": {
                        r.id: {
                            "status": r.status.value,
                            "what": r.what,
                            "vetting": r.vetting.model_dump(mode="json") if r.vetting else None,
                            "member_vettings": {
                                name: vetting.model_dump(mode="json")
                                for name, vetting in r.member_vettings.items()
                            },
                        }
                        for r in rollouts.values()
                    }
                }
            )
        )
    else:
        print_table(render.history_table(record, rollouts))
