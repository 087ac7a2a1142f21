"""What every fleetctl command shares: exit codes, common options, the NATS plumbing.

Exit codes scripts can rely on:
  0 success (for ``-w``: the rollout completed)
  1 the rollout failed, was reverted or aborted
  2 invalid input (flags, spec file, image reference)
  3 refused: another rollout is active, or the rollout is already finished
  4 not found: no such rollout, service or revision
  5 NATS cannot be reached
  10 (``-w``) the rollout waits for the operator: paused, awaiting promote, held by partition
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Annotated, Any, NoReturn, TypeVar

import nats
import nats.errors
import typer
from nats.aio.client import Client
from rich.console import Console
from rich.live import Live

from controller import render
from controller.intents import Fleet
from controller.rollout import TERMINAL, RolloutRecord, RolloutStatus, Strategy
from controller.settings import load_settings
from controller.store import NotFound, RolloutConflict
from controller.vetting import ImageRefused
from protocol.errors import BrokerError, ConfigurationError, FleetError
from protocol.labels import parse_labels

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_NOT_FOUND = 4
EXIT_NO_NATS = 5
EXIT_WAITING = 10
WAITING_ON_OPERATOR = {
    RolloutStatus.PAUSED,
    RolloutStatus.AWAITING_PROMOTION,
    RolloutStatus.HELD,
}

NatsOption = Annotated[str, typer.Option("--nats", envvar="FLEET_NATS_URL", help="NATS server URL")]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json")]
WatchOption = Annotated[bool, typer.Option("--watch", "-w", help="follow until it settles")]
DEFAULT_NATS = "nats://127.0.0.1:4222"


async def close_bus(nc: Client) -> None:
    """Close, even when the connection is already lost for good.

    Its final flush then fails: with a nats error, an OSError, or over TLS after a
    reconnect with AttributeError (asyncio has torn the TLS transport down under
    nats-py). None of these is worth a traceback on the way out.
    """
    with suppress(nats.errors.Error, OSError, AttributeError):
        await nc.close()


def run_with_fleet(work: Callable[[Fleet], Awaitable[T]], url: str) -> T:
    """Connect, open the buckets, run ``work``; every FleetError becomes its exit code."""

    async def main() -> T:
        # FLEET_* settings: the signing key (for --dry-run's pre-flight) and TLS.
        settings = load_settings()
        nc = await connect(url, settings.bus_options(url))
        try:
            return await work(await Fleet(nc, signer=settings.signer()).open())
        finally:
            await close_bus(nc)

    try:
        return asyncio.run(main())
    except NotFound as exc:
        fail(exc.message, EXIT_NOT_FOUND)
    except (RolloutConflict, ImageRefused) as exc:
        fail(exc.message, EXIT_REFUSED)
    except ConfigurationError as exc:
        fail(exc.message, EXIT_INVALID)
    except BrokerError as exc:
        fail(exc.message, EXIT_NO_NATS)
    except FleetError as exc:
        fail(exc.message, EXIT_FAILED)


async def connect(url: str, options: dict[str, Any]) -> Client:
    try:
        return await nats.connect(
            url, connect_timeout=5, max_reconnect_attempts=3, allow_reconnect=True, **options
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise BrokerError(f"cannot reach NATS at {url}: {exc!r}") from exc


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"fleetctl: {message}", err=True)
    raise typer.Exit(code)


def check_output(output: str) -> None:
    if output not in ("table", "json"):
        fail(f"--output must be table or json, not {output}", EXIT_INVALID)


def parse_selector(text: str | None) -> dict[str, str]:
    try:
        return parse_labels(text or "")
    except ConfigurationError as exc:
        fail(exc.message, EXIT_INVALID)


def exit_for(record: RolloutRecord) -> None:
    if record.status is RolloutStatus.COMPLETE:
        raise typer.Exit(0)
    if record.status in WAITING_ON_OPERATOR:
        raise typer.Exit(EXIT_WAITING)
    raise typer.Exit(EXIT_FAILED)


async def follow_rollout(fleet: Fleet, rollout_id: str, output: str) -> RolloutRecord:
    """Show the rollout as it changes until it is finished or waits for the operator."""
    console = Console()
    live = console.is_terminal and output == "table"
    last_line = ""
    record = await fleet.rollout(rollout_id)
    with (
        Live(render.rollout_view(record), console=console, auto_refresh=False)
        if live
        else (NoLive()) as view
    ):
        while True:
            record = await fleet.rollout(rollout_id)
            if live:
                view.update(render.rollout_view(record), refresh=True)
            else:
                line = render.rollout_line(record)
                if line != last_line:
                    typer.echo(line)
                    last_line = line
            if record.status in TERMINAL or record.status in WAITING_ON_OPERATOR:
                break
            await asyncio.sleep(0.5)
    if record.reason:
        typer.echo(f"{record.id}: {record.status.value}: {record.reason}")
    if output == "json":
        typer.echo(render.to_json(record.model_dump(mode="json")))
    return record


class NoLive:
    def __enter__(self) -> NoLive:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, *_: object, **__: object) -> None:
        return None


def check_strategy(strategy: Strategy, canary: str | None, partition: int | None) -> None:
    """The flags a strategy cannot do without."""
    if strategy is Strategy.CANARY and canary is None:
        fail("--strategy canary needs --canary N or N%", EXIT_INVALID)
    if strategy is Strategy.PARTITION and partition is None:
        fail("--strategy partition needs --partition N", EXIT_INVALID)


def report_started(record: RolloutRecord, watch: bool, output: str) -> None:
    """After `rollout start` or `config rollout`: the exit code of a followed rollout, or
    the record (json), or where to follow it."""
    if watch:
        exit_for(record)
    if output == "json":
        typer.echo(render.to_json(record.model_dump(mode="json")))
    else:
        typer.echo(
            f"rollout {record.id} started: {record.service} -> {record.what} "
            f"on {len(record.hosts)} host(s); follow it with: fleetctl rollout status "
            f"{record.id} -w"
        )
