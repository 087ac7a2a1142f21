"""``fleetctl config``: versioned config files per service, set at once or rolled out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError

from controller.cli import render
from controller.cli.base import (
    EXIT_INVALID,
    NatsOption,
    OutputOption,
    WatchOption,
    check_output,
    check_strategy,
    fail,
    follow_rollout,
    parse_selector,
    report_started,
    run_with_fleet,
)
from controller.cli.rollout_flags import (
    AutoPromoteOption,
    CanaryOption,
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
from controller.rollouts.model import FailureAction, RolloutRecord, Strategy
from controller.state.config_intents import (
    plan_config_rollout,
    remove_config,
    set_config,
    start_config_rollout,
)
from controller.state.config_store import StoredConfig
from controller.state.intents import Fleet
from protocol.config_files import MAX_CONFIG_FILE, ConfigContent, ConfigDocument, ConfigName
from protocol.errors import InvalidSubject
from protocol.subjects import validate_host_id, validate_service_name

config_app = command_group(
    "Versioned config files of a service: agents write them before the container starts "
    "and reload the service when they change."
)
FileOption = Annotated[Path, typer.Option("--file", "-f", help="the file's new content")]


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc}", EXIT_INVALID)
    if len(data) > MAX_CONFIG_FILE:
        fail(
            f"{path} has {len(data)} bytes; a config file may have {MAX_CONFIG_FILE}", EXIT_INVALID
        )
    return data


_CONFIG_NAME: TypeAdapter[str] = TypeAdapter(ConfigName)


def _names(service: str, name: str | None = None, host: str | None = None) -> None:
    """Refuse names that cannot be part of a KV key or subject, before connecting."""
    try:
        validate_service_name(service)
        if host is not None:
            validate_host_id(host)
    except InvalidSubject as exc:
        fail(exc.message, EXIT_INVALID)
    if name is not None:
        try:
            _CONFIG_NAME.validate_python(name)
        except ValidationError:
            fail(
                f"invalid file name {name!r}: a plain name like app.conf (letters, digits, "
                "'_', '-', dots between them; at most 128)",
                EXIT_INVALID,
            )


def _scope(
    service: str, name: str, host: str | None, selector: str | None
) -> dict[str, str] | None:
    """Checked names and the override's labels (None: base content or one host)."""
    _names(service, name, host)
    if host is not None and selector is not None:
        fail("give --host or --selector, not both", EXIT_INVALID)
    return parse_selector(selector) if selector is not None else None


@config_app.command("set")
def config_set(
    service: str,
    name: str,
    file: FileOption,
    host: Annotated[str | None, typer.Option(help="only for this host (an override)")] = None,
    selector: Annotated[
        str | None, typer.Option(help="only for hosts with these labels, k=v,... (an override)")
    ] = None,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Store a new version of NAME for SERVICE; every agent applies it at once.

    For a paced change (canary, max-unavailable, pause, revert) use `config rollout`.
    """
    check_output(output)
    labels = _scope(service, name, host, selector)
    data = _read(file)
    stored = run_with_fleet(
        lambda fleet: set_config(fleet, service, name, data, host=host, selector=labels),
        nats_url,
    )
    if output == "json":
        typer.echo(render.to_json(_summary(stored)))
        return
    document = stored.document
    typer.echo(
        f"{service}/{name}: version {document.version} stored ({document.change}, "
        f"{len(data)} bytes, {ConfigContent.of(data).sha256[:19]})"
    )


@config_app.command("rm")
def config_rm(
    service: str,
    name: str,
    host: Annotated[str | None, typer.Option(help="remove only this host's override")] = None,
    selector: Annotated[
        str | None, typer.Option(help="remove only the override for exactly these labels")
    ] = None,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Remove NAME of SERVICE, or one of its overrides; agents apply it at once.

    Without --host or --selector the file goes: agents delete it and reload. A file the
    service's spec requires is refused. Its kept versions stay in `config history`.
    """
    check_output(output)
    labels = _scope(service, name, host, selector)
    stored = run_with_fleet(
        lambda fleet: remove_config(fleet, service, name, host=host, selector=labels),
        nats_url,
    )
    if output == "json":
        removed = {"service": service, "name": name, "removed": True}
        typer.echo(render.to_json(_summary(stored) if stored else removed))
        return
    if stored is None:
        typer.echo(f"{service}/{name}: removed (agents delete the file and reload)")
        return
    document = stored.document
    typer.echo(f"{service}/{name}: version {document.version} stored ({document.change})")


def _summary(stored: StoredConfig) -> dict[str, object]:
    document = stored.document
    return {
        "service": document.service,
        "name": document.name,
        "version": document.version,
        "sha256": document.content.sha256,
        "size": len(document.content.data),
        "overrides": [o.describe() for o in document.overrides],
        "changed_at": document.changed_at.isoformat(),
        "change": document.change,
        "kv_revision": stored.kv_revision,
    }


@config_app.command("get")
def config_get(
    service: str,
    name: str,
    host: Annotated[
        str | None, typer.Option(help="the content this host gets (its overrides applied)")
    ] = None,
    version: Annotated[int | None, typer.Option(help="an earlier kept version")] = None,
    nats_url: NatsOption = None,
) -> None:
    """Print the content of NAME (the base, or as resolved for --host) to stdout."""
    _names(service, name)

    async def get(fleet: Fleet) -> bytes:
        if version is not None:
            document = await fleet.configs.version(service, name, version)
        else:
            document = (await fleet.configs.require(service, name)).document
        if host is None:
            return document.content.data
        facts = {f.host: f for f in await fleet.hosts()}
        labels = facts[host].labels if host in facts else {}
        return document.for_host(host, labels).data

    data = run_with_fleet(get, nats_url)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@config_app.command("list")
def config_list(
    service: Annotated[str | None, typer.Argument(help="only this service's files")] = None,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Every config file (of SERVICE), with its version, hash and overrides."""
    check_output(output)
    if service is not None:
        _names(service)
    stored = run_with_fleet(lambda fleet: fleet.configs.all(service), nats_url)
    if output == "json":
        typer.echo(render.to_json([_summary(item) for item in stored]))
    else:
        print_table(render.config_table(stored))


@config_app.command("history")
def config_history(
    service: str, name: str, nats_url: NatsOption = None, output: OutputOption = "table"
) -> None:
    """The kept versions of NAME (the last 64), oldest first."""
    check_output(output)
    _names(service, name)
    history = run_with_fleet(lambda fleet: fleet.configs.history(service, name), nats_url)
    if output == "json":
        typer.echo(render.to_json([_summary(item) for item in history]))
    else:
        print_table(render.config_history_table(history))


@config_app.command("diff")
def config_diff(
    service: str,
    name: str,
    version1: Annotated[int, typer.Argument(metavar="REV1")],
    version2: Annotated[int, typer.Argument(metavar="REV2")],
    nats_url: NatsOption = None,
) -> None:
    """A unified diff of two kept versions of NAME (and which overrides changed)."""
    _names(service, name)

    async def both(fleet: Fleet) -> tuple[ConfigDocument, ConfigDocument]:
        return (
            await fleet.configs.version(service, name, version1),
            await fleet.configs.version(service, name, version2),
        )

    old, new = run_with_fleet(both, nats_url)
    typer.echo("".join(render.config_diff(old, new)), nl=False)


@config_app.command("rollout")
def config_rollout(
    service: str,
    name: str,
    file: FileOption,
    strategy: Annotated[Strategy, typer.Option(help="rolling, canary or partition")] = (
        Strategy.ROLLING
    ),
    max_unavailable: MaxUnavailableOption = "25%",
    canary: CanaryOption = None,
    auto_promote_after: AutoPromoteOption = None,
    partition: PartitionOption = None,
    selector: SelectorOption = None,
    max_failure_ratio: MaxFailureRatioOption = 0.0,
    failure_action: FailureActionOption = FailureAction.PAUSE,
    progress_deadline: ProgressDeadlineOption = 600.0,
    watch: WatchOption = False,
    nats_url: NatsOption = None,
    output: OutputOption = "table",
) -> None:
    """Roll a new version of NAME out host by host, like an image (pause, promote, abort).

    Each host writes the file, reloads the service and verifies it; a host that fails
    puts its previous file back. The version is stored when the rollout completes.
    """
    check_output(output)
    _names(service, name)
    check_strategy(strategy, canary, partition)
    data = _read(file)
    spec = rollout_spec(
        selector,
        strategy=strategy,
        max_unavailable=max_unavailable,
        canary=canary,
        auto_promote_after=auto_promote_after,
        partition=partition,
        max_failure_ratio=max_failure_ratio,
        failure_action=failure_action,
        progress_deadline=progress_deadline,
    )

    async def start(fleet: Fleet) -> RolloutRecord:
        record = await plan_config_rollout(fleet, service, name, data, spec)
        started = await start_config_rollout(fleet, record)
        if not watch:
            return started
        return await follow_rollout(fleet, started.id, output)

    report_started(run_with_fleet(start, nats_url), watch, output)
