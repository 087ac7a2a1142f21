"""fleetctl: the operator's command line, and the long-lived controller process.

Exit codes are listed in controller/cli/base.py (and the README).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from controller.bus_link import BusLink
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
    load_spec,
    parse_selector,
    report_started,
    run_with_fleet,
    serve_until_stopped,
)
from controller.cli.bus import hosts_app, pki_app
from controller.cli.config import config_app
from controller.cli.tables import print_table
from controller.cli.typer_app import PlainErrorsGroup, command_group
from controller.leader.executor import Executor
from controller.rollouts.fleet_metrics import FleetMetrics
from controller.rollouts.model import (
    AnalysisCheck,
    FailureAction,
    RolloutRecord,
    RolloutSpec,
    RolloutStatus,
    Strategy,
)
from controller.settings import ControllerSettings, load_settings
from controller.state.intents import Fleet
from controller.streams.exporter import FleetExporter
from controller.streams.feed import FleetFeed
from controller.streams.log_view import FleetLogLine, LogMerge, LogTail
from protocol import SCHEMA_VERSION
from protocol.errors import ConfigurationError
from protocol.models import LogBatch, MetricsSample, utc_now
from protocol.signing import generate_key
from protocol.version import fleetwave_version

app = command_group(
    "Roll container updates across a fleet of Docker hosts, safely.",
    name="fleetctl",
    add_completion=False,
    cls=PlainErrorsGroup,
)
rollout_app = command_group("Start, follow and steer rollouts.")
controller_app = command_group("The long-lived controller process.")
app.add_typer(rollout_app, name="rollout")
app.add_typer(controller_app, name="controller")
app.add_typer(config_app, name="config")
keys_app = command_group("The controller's command-signing keys.")
app.add_typer(keys_app, name="keys")
app.add_typer(hosts_app, name="hosts")
app.add_typer(pki_app, name="pki")


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option(help="where to write the private key (mode 0600)")],
) -> None:
    """Create an Ed25519 key: the controller signs with it (FLEET_SIGNING_KEY_FILE); agents
    trust the public key printed here (FLEET_TRUSTED_COMMAND_KEYS)."""
    private, public = generate_key()
    try:
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(f"cannot create {out}: {exc.strerror}", EXIT_INVALID)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(private + "\n")
    typer.echo(public)


LOG_HOLD = 1.0
"""Seconds ``logs -f`` holds a line for lines of other hosts that may precede it."""


@app.callback()
def _group() -> None:
    """fleetctl talks to the fleet over NATS; rollouts are driven by `fleetctl controller run`."""


@app.command()
def version() -> None:
    """Print fleetctl's version and the protocol schema version it speaks."""
    typer.echo(f"fleetctl {fleetwave_version()} (protocol schema {SCHEMA_VERSION})")


# ---- events ----

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _since(text: str | None) -> datetime | None:
    """ "10m", "2h", "1d", "30s", or an ISO 8601 time (UTC when it names no zone)."""
    if text is None:
        return None
    match = _SINCE.match(text.strip())
    if match:
        return utc_now() - timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r}: give a duration like 10m, 2h, 1d or an ISO time", EXIT_INVALID)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command()
def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep waiting for more")] = False,
    rollout: Annotated[str | None, typer.Option(help="only this rollout's events")] = None,
    host: Annotated[str | None, typer.Option(help="only this host's events")] = None,
    since: Annotated[str | None, typer.Option(help="10m, 2h, 1d or an ISO time")] = None,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Print the fleet's events (FLEET_EVENTS) from --since, oldest first; -f follows."""
    check_output(output)
    start = _since(since)

    async def show(fleet: Fleet) -> None:
        feed = FleetFeed(fleet.client)
        async for delivered in feed.events(since=start, host=host, rollout=rollout, follow=follow):
            if output == "json":
                line = json.dumps(
                    {"subject": delivered.subject, **delivered.message.model_dump(mode="json")},
                    default=str,
                )
            else:
                line = render.event_line(delivered.subject, delivered.message)
            typer.echo(line)

    run_with_fleet(show, nats_url)


# ---- logs, top, exporter ----


@app.command()
def logs(
    service: str,
    host: Annotated[str | None, typer.Option(help="only this host's lines")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep waiting for more")] = False,
    since: Annotated[str | None, typer.Option(help="10m, 2h, 1d or an ISO time")] = None,
    tail: Annotated[int | None, typer.Option(help="only the last N lines (then follow)")] = None,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t")] = False,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Print SERVICE's container logs (FLEET_LOGS) from every host, merged in time order."""
    check_output(output)
    if tail is not None and tail < 0:
        fail("--tail must be 0 or more", EXIT_INVALID)
    start = _since(since)
    width = max(len(host or ""), 8)

    def emit(lines: list[FleetLogLine]) -> None:
        nonlocal width
        for line in lines:
            width = max(width, len(line.host))
            typer.echo(line.json() if output == "json" else line.text(width, timestamps))

    async def show(fleet: Fleet) -> None:
        feed = FleetFeed(fleet.client)
        history = LogTail(tail)
        last_sequence = 0
        async for delivered in feed.logs(service, host=host, since=start):
            if isinstance(delivered.message, LogBatch):
                history.add(delivered.message)
            last_sequence = delivered.sequence
        emit(history.lines())
        if follow:
            await _follow_logs(feed, service, host, last_sequence, start, emit)

    run_with_fleet(show, nats_url)


async def _follow_logs(
    feed: FleetFeed,
    service: str,
    host: str | None,
    after: int,
    since: datetime | None,
    emit: Callable[[list[FleetLogLine]], None],
) -> None:
    """New batches, held briefly so that lines from many hosts come out in time order."""
    merge = LogMerge(hold=LOG_HOLD)
    arrived: asyncio.Queue[LogBatch] = asyncio.Queue()

    async def pump() -> None:
        async for delivered in feed.logs(
            service,
            host=host,
            start_sequence=after + 1 if after else None,
            since=None if after else since,
            follow=True,
        ):
            if isinstance(delivered.message, LogBatch):
                arrived.put_nowait(delivered.message)

    pumping = asyncio.create_task(pump(), name="logs-follow")
    try:
        while not pumping.done():
            try:
                merge.add(await asyncio.wait_for(arrived.get(), LOG_HOLD))
                emit(merge.ready())
            except TimeoutError:
                emit(merge.drain())  # quiet for a while: nothing older is coming
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
    pumping.result()  # a broker error ends the follow with its message


@app.command()
def top(
    once: Annotated[bool, typer.Option(help="print the table once and exit")] = False,
    selector: Annotated[str | None, typer.Option(help="k=v,... host labels")] = None,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Hosts' CPU, memory, disk and services, live from the metrics stream (FLEET_METRICS)."""
    check_output(output)
    wanted = parse_selector(selector)

    async def show(fleet: Fleet) -> None:
        hosts = {facts.host for facts in await fleet.hosts(wanted)} if wanted else None
        feed = FleetFeed(fleet.client)
        view = FleetMetrics()
        last_sequence = 0
        async for delivered in feed.metrics(latest=True):
            if isinstance(delivered.message, MetricsSample):
                view.add(delivered.message)
            last_sequence = delivered.sequence
        if once or output == "json":
            if output == "json":
                typer.echo(render.top_json(view, hosts))
            else:
                print_table(render.top_table(view, hosts))
            return
        with Live(render.top_table(view, hosts), auto_refresh=False) as live:
            async for delivered in feed.metrics(
                start_sequence=last_sequence + 1 if last_sequence else None,
                since=None if last_sequence else utc_now(),
                follow=True,
            ):
                if isinstance(delivered.message, MetricsSample):
                    view.add(delivered.message)
                    live.update(render.top_table(view, hosts), refresh=True)

    run_with_fleet(show, nats_url)


@app.command()
def exporter(
    listen: Annotated[str, typer.Option(help="address:port to serve /metrics on")] = (
        "127.0.0.1:9469"
    ),
    nats_url: NatsOption = None,
) -> None:
    """Serve fleet metrics for Prometheus, aggregated from the metrics and event streams."""
    address, _, port_text = listen.rpartition(":")
    if not address or not port_text.isdigit():
        fail(f"--listen {listen!r}: give address:port, like 127.0.0.1:9469", EXIT_INVALID)

    async def serve(fleet: Fleet) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await FleetExporter(fleet).serve(address, int(port_text), stop)

    run_with_fleet(serve, nats_url)


# ---- rollouts ----


@rollout_app.command("start")
def rollout_start(
    service: str,
    image: Annotated[str | None, typer.Option(help="the new image reference")] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="service spec (JSON or TOML) for a first rollout")
    ] = None,
    strategy: Annotated[Strategy, typer.Option()] = Strategy.ROLLING,
    max_unavailable: Annotated[str, typer.Option(help="count or percentage")] = "25%",
    max_surge: Annotated[str, typer.Option(help="count or percentage")] = "0",
    canary: Annotated[str | None, typer.Option(help="first wave size, then wait")] = None,
    auto_promote_after: Annotated[float | None, typer.Option(help="seconds")] = None,
    partition: Annotated[int | None, typer.Option(help="update only ordinals >= N")] = None,
    selector: Annotated[str | None, typer.Option(help="k=v,... host labels")] = None,
    max_failure_ratio: Annotated[float, typer.Option()] = 0.0,
    failure_action: Annotated[FailureAction, typer.Option()] = FailureAction.PAUSE,
    min_healthy_time: Annotated[float | None, typer.Option(help="seconds")] = None,
    progress_deadline: Annotated[float, typer.Option(help="seconds")] = 600.0,
    min_ready: Annotated[str, typer.Option(help="pre-flight: count or percentage")] = "100%",
    remove_old_after: Annotated[
        float, typer.Option(help="blue-green: seconds the old colour is kept after the switch")
    ] = 300.0,
    allow_downgrade: bool = False,
    allow_major: bool = False,
    check: Annotated[
        list[str] | None,
        typer.Option(
            "--check",
            metavar="CHECK",
            help="canary analysis, repeatable: [name=]metric<=number with metric one of "
            "restarts, unhealthy, memory_ratio, memory_bytes, cpu_percent",
        ),
    ] = None,
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
    """Start a rollout of SERVICE to --image (the controller drives it).

    The image is vetted first: its registry must be allowed, its tag is pinned to a
    digest, the scanner and the Rego policies run if configured (FLEET_* settings)."""
    check_output(output)
    if strategy is Strategy.BLUE_GREEN and (canary is not None or partition is not None):
        fail("blue-green switches every host at once: no --canary or --partition", EXIT_INVALID)
    check_strategy(strategy, canary, partition)
    check_image(image)
    override = load_spec(spec_file) if spec_file else None
    if image is None and override is None:
        fail("give --image, or --spec for the service's first rollout", EXIT_INVALID)
    try:
        spec = RolloutSpec(
            strategy=strategy,
            max_unavailable=max_unavailable,
            max_surge=max_surge,
            canary=canary,
            auto_promote_after=auto_promote_after,
            partition=partition,
            selector=parse_selector(selector),
            max_failure_ratio=max_failure_ratio,
            failure_action=failure_action,
            min_healthy_time=min_healthy_time,
            progress_deadline=progress_deadline,
            min_ready=min_ready,
            remove_old_after=remove_old_after,
            allow_downgrade=allow_downgrade,
            allow_major=allow_major,
            analysis=tuple(AnalysisCheck.parse(text) for text in check or ()),
        )
    except ValidationError as exc:
        invalid_flags(exc)
    except ValueError as exc:  # a --check that does not parse
        fail(f"--check: {exc}", EXIT_INVALID)

    async def start(fleet: Fleet) -> RolloutRecord | None:
        record, _ = await fleet.plan_rollout(service, image, spec, override)
        record = await fleet.vet(record, load_settings().vetter(), skip_scan=skip_scan)
        if dry_run:
            result = await fleet.dry_run(record)
            if output == "json":
                typer.echo(render.to_json(result.__dict__ | {"record": record.model_dump()}))
            else:
                render.dry_run_view(result, Console())
            return None
        started = await fleet.start_rollout(record)
        if not watch:
            return started
        return await follow_rollout(fleet, started.id, output)

    record = run_with_fleet(start, nats_url)
    if record is not None:
        report_started(record, watch, output)


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
        typer.echo(f"rollout {record.id} started: {service} back to {record.target.image}")


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
                        }
                        for r in rollouts.values()
                    }
                }
            )
        )
    else:
        print_table(render.history_table(record, rollouts))


# ---- the controller process ----


@controller_app.command("run")
def controller_run(
    nats_url: NatsOption = None,
    controller_id: Annotated[str | None, typer.Option("--id", help="default: host-pid")] = None,
    tick: Annotated[float | None, typer.Option(help="seconds between passes")] = None,
    lease_ttl: Annotated[float | None, typer.Option(help="leader lease, seconds")] = None,
    host_timeout: Annotated[float | None, typer.Option(help="heartbeat age = offline")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="allow plaintext NATS to a non-loopback address")
    ] = False,
) -> None:
    """Drive rollouts until SIGTERM; several may run, one leads (KV lease)."""
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail("--log-level must be DEBUG, INFO, WARNING or ERROR", EXIT_INVALID)
    try:
        settings = load_settings(
            nats_urls=tuple(nats_url) if nats_url else None,
            nats_insecure=insecure or None,
            controller_id=controller_id,
            tick=tick,
            lease_ttl=lease_ttl,
            host_timeout=host_timeout,
        )
    except ConfigurationError as exc:
        fail(exc.message, EXIT_INVALID)
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    serve_until_stopped(lambda: _serve(settings))


async def _serve(settings: ControllerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # However long NATS stays away: nats-py retries every server, the link logs it once.
    link = BusLink(settings.servers, logging.getLogger("fleetctl.bus"), announce_connect=True)
    nc = await link.connect_until(
        stop,
        settings.bus_options(),
        name=f"fleet-controller-{settings.controller_id}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
    )
    if nc is None:
        return
    try:
        await Executor(nc, settings).run(stop)
    finally:
        await link.close()


def main() -> None:
    app()
