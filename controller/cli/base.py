"""What every fleetctl command shares: exit codes, common options, the NATS plumbing.

Exit codes scripts can rely on:
  0 success (for ``-w``: the rollout completed)
  1 the rollout failed, was reverted or aborted
  2 invalid input (flags, spec file, image reference)
  3 refused: another rollout is active, the rollout is already finished, or the image
    failed vetting or cannot be resolved (unknown registry, repository or tag)
  4 not found: no such rollout, service or revision
  5 NATS cannot be reached
  10 (``-w``) the rollout waits for the operator: paused, awaiting promote, held by partition
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tomllib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import nats.errors
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from controller.bus_link import BusLink, why
from controller.cli import render
from controller.errors import ComposeError
from controller.gates.vetting import ImageRefused
from controller.rollouts.declaration import Declaration
from controller.rollouts.model import TERMINAL, RolloutRecord, RolloutStatus, Strategy
from controller.settings import describe_invalid, load_settings
from controller.state.intents import Fleet
from controller.state.store import NotFound, RolloutConflict
from fleet_registry.transport import RegistryFailure
from protocol.errors import BrokerError, ConfigurationError, FleetError, ProtocolError
from protocol.image_ref import parse_image_reference
from protocol.labels import parse_labels
from protocol.models import utc_now

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

NatsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--nats",
        metavar="URL",
        help="NATS server, repeatable or a comma list (default: FLEET_NATS_URLS, "
        "FLEET_NATS_URL, nats://127.0.0.1:4222)",
        show_default=False,
    ),
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json")]
WatchOption = Annotated[bool, typer.Option("--watch", "-w", help="follow until it settles")]


def run_with_fleet(work: Callable[[Fleet], Awaitable[T]], nats_urls: list[str] | None) -> T:
    """Connect, open the buckets, run ``work``; every FleetError becomes its exit code."""

    async def main() -> T:
        # FLEET_* settings: the bus, the signing key (for --dry-run's pre-flight) and TLS.
        settings = load_settings(nats_urls=tuple(nats_urls) if nats_urls else None)
        link = BusLink(settings.servers, _bus_log(), announce_connect=False)
        nc = await link.connect(
            settings.bus_options(), max_reconnect_attempts=3, reconnect_time_wait=1
        )
        try:
            fleet = Fleet(nc, host_timeout=settings.host_timeout, signer=settings.signer())
            return await work(await fleet.open())
        finally:
            await link.close()

    try:
        return asyncio.run(main())
    except NotFound as exc:
        fail(exc.message, EXIT_NOT_FOUND)
    except (RolloutConflict, ImageRefused) as exc:
        fail(exc.message, EXIT_REFUSED)
    except RegistryFailure as exc:  # only vetting asks a registry: the tag did not resolve
        fail(f"the rollout is refused:\n  {exc.code}: {exc.message}", EXIT_REFUSED)
    except ConfigurationError as exc:
        fail(exc.message, EXIT_INVALID)
    except BrokerError as exc:
        fail(exc.message, EXIT_NO_NATS)
    except FleetError as exc:
        fail(exc.message, EXIT_FAILED)
    except (nats.errors.Error, TimeoutError) as exc:  # connected, but a request went unanswered
        fail(f"NATS did not answer: {why(exc)}", EXIT_NO_NATS)


def serve_until_stopped(serve: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """asyncio.run for `controller run`: what ends it early is one line and its exit code.

    A NATS request that fails for good (a node lost while the controller starts) ends the
    process with exit 5 for its supervisor to restart, not with the library's traceback.
    """
    try:
        asyncio.run(serve())
    except BrokerError as exc:
        fail(exc.message, EXIT_NO_NATS)
    except ConfigurationError as exc:
        fail(exc.message, EXIT_INVALID)
    except (nats.errors.Error, TimeoutError) as exc:
        fail(f"NATS stopped answering: {why(exc)}", EXIT_NO_NATS)


def _bus_log() -> logging.Logger:
    """Where a one-shot command tells that its connection dropped or came back."""
    log = logging.getLogger("fleetctl.bus")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fleetctl: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"fleetctl: {message}", err=True)
    raise typer.Exit(code)


FLAG_OF_FIELD = {"analysis": "--check"}
"""RolloutSpec fields whose flag is not named after them."""


def invalid_flags(exc: ValidationError) -> NoReturn:
    """Options that fail a model's validation, named as the flags the operator typed."""

    def flag(field: str) -> str:
        return FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))

    fail(describe_invalid(exc, flag), EXIT_INVALID)


def check_image(image: str | None) -> None:
    """An image given must be a reference; an empty one is a mistake, not "no image"."""
    if image is None:
        return
    try:
        parse_image_reference(image)
    except ProtocolError as exc:
        fail(f"--image: {exc.message}", EXIT_INVALID)


def load_declaration(path: Path) -> Declaration:
    """A service declaration (a spec file, with its optional selector, update policy and
    drift rule) from JSON or TOML; a bad one is named by field, exit 2."""
    try:
        text = path.read_text()
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("expected a table of settings")
        return Declaration.from_document(data)
    except ValidationError as exc:
        fail(f"spec file {path}: {describe_invalid(exc, str)}", EXIT_INVALID)
    except (OSError, ValueError) as exc:  # JSON and TOML errors are ValueErrors
        fail(f"spec file {path}: {exc}", EXIT_INVALID)


def load_app_declaration(path: Path, name: str, selector: str | None) -> Declaration:
    """An app from a Compose file (its variables from the environment and its .env),
    with its x-fleetwave block; ``selector`` replaces the block's. A bad file is named
    by key and service, exit 2; a variable with no value is warned of."""
    # Imported here: the Compose schema's validator takes a second to import, and
    # every other fleetctl command would pay it.
    from controller.compose.project import compose_app

    try:
        found = compose_app(path, name, os.environ)
        declaration = Declaration.of_app(found.app, found.extension)
    except ComposeError as exc:
        fail(f"{path}: {exc.message}", EXIT_INVALID)
    except ValidationError as exc:
        fail(f"{path}: x-fleetwave: {describe_invalid(exc, str)}", EXIT_INVALID)
    except ValueError as exc:
        fail(f"{path}: {exc}", EXIT_INVALID)
    for variable in sorted(found.missing):
        typer.echo(f"fleetctl: warning: {path}: ${variable} is not set: empty", err=True)
    if selector is not None:
        declaration = declaration.model_copy(update={"selector": parse_selector(selector)})
    return declaration


def check_output(output: str) -> None:
    if output not in ("table", "json"):
        fail(f"--output must be table or json, not {output}", EXIT_INVALID)


def parse_selector(text: str | None) -> dict[str, str]:
    try:
        return parse_labels(text or "")
    except ConfigurationError as exc:
        fail(f"--selector: {exc.message}", EXIT_INVALID)


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
        typer.echo(render.rollout_json(record, utc_now()))
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
