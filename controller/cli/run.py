"""fleetctl controller run: the long-lived controller process."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Annotated

import typer

from controller.bus_link import BusLink
from controller.cli.base import (
    EXIT_INVALID,
    NatsOption,
    fail,
    serve_until_stopped,
)
from controller.cli.typer_app import command_group
from controller.leader.executor import Executor
from controller.settings import ControllerSettings, load_settings
from protocol.errors import ConfigurationError

controller_app = command_group("The long-lived controller process.")


@controller_app.command("run")
def controller_run(
    nats_url: NatsOption = None,
    controller_id: Annotated[str | None, typer.Option("--id", help="default: host-pid")] = None,
    tick: Annotated[float | None, typer.Option(help="seconds between passes")] = None,
    lease_ttl: Annotated[float | None, typer.Option(help="leader lease, seconds")] = None,
    host_timeout: Annotated[float | None, typer.Option(help="heartbeat age = offline")] = None,
    converge_interval: Annotated[
        float | None, typer.Option(help="seconds between convergence passes; 0: off")
    ] = None,
    allow_hooks: Annotated[
        bool, typer.Option("--allow-hooks", help="run specs' post_rollout hooks on this host")
    ] = False,
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
            converge_interval=converge_interval,
            allow_hooks=allow_hooks or None,
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
