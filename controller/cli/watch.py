"""fleetctl events, logs, top and exporter: reading the fleet's streams."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.live import Live

from controller.cli import render
from controller.cli.base import (
    EXIT_INVALID,
    NatsOption,
    OutputOption,
    check_output,
    fail,
    parse_selector,
    run_with_fleet,
)
from controller.cli.tables import print_table
from controller.rollouts.fleet_metrics import FleetMetrics
from controller.state.intents import Fleet
from controller.streams.exporter import FleetExporter
from controller.streams.feed import FleetFeed
from controller.streams.log_view import FleetLogLine, LogMerge, LogTail
from protocol.app import AppSpec
from protocol.models import LogBatch, MetricsSample, utc_now

LOG_HOLD = 1.0
"""Seconds ``logs -f`` holds a line for lines of other hosts that may precede it."""


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
    """Print SERVICE's container logs (FLEET_LOGS) from every host, merged in time order;
    an app's: every member's, each line with its member's container name."""
    check_output(output)
    if tail is not None and tail < 0:
        fail("--tail must be 0 or more", EXIT_INVALID)
    start = _since(since)
    width = max(len(host or ""), 8)

    members: list[str] = []

    def emit(lines: list[FleetLogLine]) -> None:
        nonlocal width
        labels = max((len(name) for name in members), default=0)
        for line in lines:
            width = max(width, len(line.host))
            typer.echo(line.json() if output == "json" else line.text(width, timestamps, labels))

    async def show(fleet: Fleet) -> None:
        record, _ = await fleet.services.get(service)
        app = record.latest_spec
        if isinstance(app, AppSpec):
            members.extend(member.spec.name for member in app.members)
        feed = FleetFeed(fleet.client)
        history = LogTail(tail)
        last_sequence = 0
        async for delivered in feed.logs(members or service, host=host, since=start):
            if isinstance(delivered.message, LogBatch):
                history.add(delivered.message)
            last_sequence = delivered.sequence
        emit(history.lines())
        if follow:
            await _follow_logs(feed, members or service, host, last_sequence, start, emit)

    run_with_fleet(show, nats_url)


async def _follow_logs(
    feed: FleetFeed,
    service: str | list[str],
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


def register(app: typer.Typer) -> None:
    """These verbs sit at fleetctl's top level."""
    for verb in (events, logs, top, exporter):
        app.command()(verb)
