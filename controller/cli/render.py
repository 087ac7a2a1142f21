"""How fleetctl shows things: rich tables for people, JSON for scripts."""

from __future__ import annotations

import difflib
import json
from datetime import datetime
from typing import Any

from rich import filesize
from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controller.cli.tables import OneLineTable, print_lines, print_table
from controller.rollouts.fleet_metrics import FleetMetrics
from controller.rollouts.host_health import span
from controller.rollouts.model import TERMINAL, UPDATED, HostPhase, RolloutRecord, RolloutStatus
from controller.rollouts.workload import Workload, describe
from controller.state.config_store import StoredConfig
from controller.state.intents import DryRun
from controller.state.services import ServiceRecord
from protocol.app import AppSpec
from protocol.config_files import ConfigDocument
from protocol.models import (
    AnyMessage,
    ColourSwitch,
    ContainerEvent,
    ErrorReply,
    ImagesPruned,
    OperationReply,
    RolloutEvent,
    UpdateProgress,
    utc_now,
)

PHASE_STYLE = {
    HostPhase.DONE: "green",
    HostPhase.RETIRED: "green",
    HostPhase.STAGED: "cyan",
    HostPhase.SWITCHING: "yellow",
    HostPhase.RETIRING: "yellow",
    HostPhase.READY: "cyan",
    HostPhase.UPDATING: "yellow",
    HostPhase.PREPARING: "yellow",
    HostPhase.REVERTING: "magenta",
    HostPhase.REVERTED: "magenta",
    HostPhase.FAILED: "red",
    HostPhase.NOT_READY: "red",
}
STATUS_STYLE = {
    RolloutStatus.COMPLETE: "bold green",
    RolloutStatus.FAILED: "bold red",
    RolloutStatus.REVERTED: "bold magenta",
    RolloutStatus.ABORTED: "bold magenta",
    RolloutStatus.PAUSED: "bold yellow",
}


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, sort_keys=True)


def ago(when: datetime, now: datetime | None = None) -> str:
    return f"{span(((now or utc_now()) - when).total_seconds())} ago"


def offline_for(record: RolloutRecord, host: str, now: datetime) -> float | None:
    """Seconds the controller had not heard from ``host``, as the record has it: up to
    ``now`` while the rollout is active, up to its last write once it has ended."""
    since = record.hosts[host].offline_since
    if since is None:
        return None
    end = record.updated_at if record.status in TERMINAL else now
    return max(0.0, (end - since).total_seconds())


def rollout_view(record: RolloutRecord, now: datetime | None = None) -> Group:
    header, summary = _rollout_heading(record)
    done, total = record.count(*UPDATED), len(record.hosts)
    bar = ProgressBar(total=max(total, 1), completed=done, width=40)
    return Group(header, bar, summary, rollout_hosts(record, now or utc_now()))


def print_rollout(record: RolloutRecord, console: Console, now: datetime | None = None) -> None:
    """``rollout status ID``: the view on a terminal; plain lines in a pipe."""
    if console.is_terminal:
        console.print(rollout_view(record, now))
        return
    header, summary = _rollout_heading(record)
    print_lines([header.plain, *summary.plain.splitlines()], console)
    print_table(rollout_hosts(record, now or utc_now()), console)


def rollout_json(record: RolloutRecord, now: datetime) -> str:
    """The record, and for each host since when and how long (seconds) the controller has
    not heard from it (``offline_since``, ``offline_for``; null while it is in touch)."""
    data = record.model_dump(mode="json")
    for host, entry in record.hosts.items():
        since, seconds = entry.offline_since, offline_for(record, host, now)
        data["hosts"][host]["offline_since"] = since.isoformat() if since else None
        data["hosts"][host]["offline_for"] = None if seconds is None else round(seconds, 1)
    return to_json(data)


def _rollout_heading(record: RolloutRecord) -> tuple[Text, Text]:
    done = record.count(*UPDATED)
    style = STATUS_STYLE.get(record.status, "bold")
    app = record.target if isinstance(record.target, AppSpec) else None
    what = f"app of {len(app.members)} members" if app and not record.config else record.what
    header = Text.assemble(
        (f"{record.id}", "bold"),
        f"  {record.service} r{record.revision} -> {what}  ",
        (record.status.value, style),
    )
    summary = Text(
        f"{done}/{len(record.hosts)} done  strategy {record.spec.strategy.value}  {record.reason}"
    )
    if record.vetting is not None:
        summary.append(f"\nvetted: {record.vetting.summary()}")
    for member in app.members if app else ():  # each with its image and checks
        vetting = record.member_vettings.get(member.name)
        checks = f"  vetted: {vetting.summary()}" if vetting else ""
        summary.append(f"\nmember {member.name}: {member.spec.image}{checks}")
    return header, summary


def rollout_hosts(record: RolloutRecord, now: datetime) -> Table:
    """One row per host; a host the controller lost touch with shows ``offline 42s`` as
    its phase, and the phase it is stuck in leads its detail."""
    table = OneLineTable("#", "host", "phase", "detail", "since", cut_first=("detail", "host"))
    table.header_style = "bold"
    for ordinal, host in enumerate(record.ordered_hosts()):
        entry = record.hosts[host]
        phase = Text(entry.phase.value, PHASE_STYLE.get(entry.phase, ""))
        detail = entry.detail[:80]
        away = offline_for(record, host, now)
        if away is not None:
            phase = Text(f"offline {span(away)}", "bold red")
            detail = f"{entry.phase.value}: {detail}" if detail else entry.phase.value
        table.add_row(str(ordinal), host, phase, detail, ago(entry.since, now))
    return table


def rollout_line(record: RolloutRecord) -> str:
    """One line per change, for logs and pipes (no terminal control codes)."""
    phases = " ".join(
        f"{host}:{record.hosts[host].phase.value}"
        + ("(offline)" if record.hosts[host].offline_since else "")
        for host in record.ordered_hosts()
    )
    done = record.count(*UPDATED)
    return f"{record.id} {record.status.value} {done}/{len(record.hosts)} done | {phases}"


def rollouts_table(records: list[RolloutRecord]) -> Table:
    table = OneLineTable(
        *("id", "service", "rolls out", "status", "done", "created"),
        title="rollouts",
        cut_first=("rolls out", "service", "created"),
    )
    for record in records:
        table.add_row(
            record.id,
            record.service,
            # The whole reference is in -o json.
            short_image(record.what) if record.config else short_workload(record.target),
            Text(record.status.value, STATUS_STYLE.get(record.status, "")),
            f"{record.count(*UPDATED)}/{len(record.hosts)}",
            ago(record.created_at),
        )
    return table


def history_table(record: ServiceRecord, rollouts: dict[str, RolloutRecord]) -> Table:
    # The image gives way first; a vetting verdict such as SCAN SKIPPED only after it.
    table = OneLineTable(
        *("rev", "rolls out", "rollout", "status", "vetted", "created", ""),
        title=f"{record.service}: revisions and config rollouts",
        cut_first=("rolls out", "vetted"),
    )
    rows = [
        (
            revision.created_at,
            str(revision.revision),
            short_workload(revision.spec),
            revision.rollout_id,
            rollouts[revision.rollout_id].status.value if revision.rollout_id in rollouts else "-",
            _vetted(rollouts.get(revision.rollout_id)),
            "current" if revision.revision == record.current else "",
        )
        for revision in record.revisions
    ]
    # Config rollouts change no revision of the spec; they are listed in time order too.
    rows += [
        (r.created_at, "-", r.what, r.id, r.status.value, "-", "")
        for r in rollouts.values()
        if r.config is not None
    ]
    for created, *cells in sorted(rows, key=lambda row: row[0]):
        table.add_row(*cells[:5], ago(created), cells[5])
    return table


def short_image(image: str) -> str:
    """An image for a narrow table: the last path part, the digest cut to 12 hex digits
    (a service's revisions share their registry and path; -o json has it all)."""
    name, at, digest = image.partition("@sha256:")
    name = name.rsplit("/", 1)[-1]
    return f"{name}@{digest[:12]}" if at else name


def short_workload(workload: Workload) -> str:
    """A service's image, or each app member's, for a narrow table."""
    if isinstance(workload, AppSpec):
        return ", ".join(f"{m.name}={short_image(m.spec.image)}" for m in workload.members)
    return short_image(workload.image)


def _vetted(record: RolloutRecord | None) -> str:
    if record is not None and record.member_vettings:
        return "; ".join(f"{m}: {v.summary()}" for m, v in record.member_vettings.items())
    if record is None or record.vetting is None:
        return "-"
    return record.vetting.summary()


def dry_run_view(result: DryRun, console: Console) -> None:
    record = result.record
    console.print(
        f"[bold]dry run[/bold] {record.id}: {record.service} -> {describe(record.target)} "
        f"on {len(record.hosts)} host(s), strategy {record.spec.strategy.value}"
    )
    console.print("pre-flight:")  # a line of its own: a pipe gets no table titles
    table = OneLineTable("host", "ready", "reasons", cut_first=("reasons",))
    for check in result.preflight:
        reasons = "; ".join(f"{r.code}: {r.text}" for r in check.reasons)
        table.add_row(check.host, "yes" if check.ready else "[red]no[/red]", reasons)
    print_table(table, console)
    for index, (label, hosts) in enumerate(result.waves, start=1):
        console.print(f"  {index:>2}. {label}: {', '.join(hosts) or '(wait for promote)'}")
    console.print(f"would end: {result.final_status.value}")


def event_summary(message: AnyMessage) -> str:
    """The part of an event a person reads first."""
    if isinstance(message, UpdateProgress):
        return f"{message.service} {message.phase.value} {message.detail}".rstrip()
    if isinstance(message, RolloutEvent):
        return f"{message.rollout_id} {message.status} {message.reason}".rstrip()
    if isinstance(message, ContainerEvent):
        code = f" exit {message.exit_code}" if message.exit_code is not None else ""
        return f"{message.service or message.container} {message.action.value}{code}"
    if isinstance(message, OperationReply):
        return f"{message.service} {message.outcome.value}"
    if isinstance(message, ImagesPruned):
        freed = f", {message.freed_bytes / 1e6:.1f} MB freed" if message.freed_bytes else ""
        return f"{message.service} removed {len(message.removed)} old images{freed}"
    if isinstance(message, ColourSwitch):
        return f"{message.service} now serves {message.colour} on port {message.port}"
    if isinstance(message, ErrorReply):
        return f"{message.code}: {message.message}"
    return ""


def event_line(subject: str, message: AnyMessage) -> str:
    when = message.sent_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    source = subject.split(".")[2] if subject.count(".") >= 2 else subject
    return f"{when} {source} {message.kind} {event_summary(message)}".rstrip()


def top_table(view: FleetMetrics, hosts: set[str] | None = None) -> Table:
    """One row per host from its newest metrics sample (``fleetctl top``)."""
    table = OneLineTable(
        *("HOST", "CPU", "MEMORY", "DISK", "LOAD", "SERVICES", "SAMPLE"),
        title="fleet top",
        cut_first=("SERVICES", "HOST"),
    )
    now = utc_now()
    for host, sample in sorted(view.latest.items()):
        if hosts is not None and host not in hosts:
            continue
        services = ", ".join(
            f"{c.service} {c.health.value} {c.cpu_percent:.0f}% {filesize.decimal(c.memory_bytes)}"
            + (f" restarts {c.restart_count}" if c.restart_count else "")
            for c in sample.containers
        )
        fresh = view.fresh(host, now)
        table.add_row(
            host,
            f"{sample.cpu_percent:.0f}%",
            f"{filesize.decimal(sample.memory_used)}/{filesize.decimal(sample.memory_total)}",
            f"{filesize.decimal(sample.disk_used)}/{filesize.decimal(sample.disk_total)}",
            f"{sample.load_1m:.2f}",
            services or "-",
            Text(ago(sample.sent_at, now), style="" if fresh else "red"),
        )
    return table


def top_json(view: FleetMetrics, hosts: set[str] | None = None) -> str:
    return to_json(
        [
            {**sample.model_dump(mode="json"), "fresh": view.fresh(host, utc_now())}
            for host, sample in sorted(view.latest.items())
            if hosts is None or host in hosts
        ]
    )


def config_table(stored: list[StoredConfig]) -> Table:
    table = OneLineTable(
        *("service", "file", "version", "size", "sha256", "overrides", "changed"),
        title="config files",
        cut_first=("overrides", "sha256"),
    )
    for item in stored:
        document = item.document
        table.add_row(
            document.service,
            document.name,
            str(document.version),
            filesize.decimal(len(document.content.data)),
            document.content.sha256.removeprefix("sha256:")[:12],
            ", ".join(o.describe() for o in document.overrides) or "-",
            ago(document.changed_at),
        )
    return table


def config_history_table(history: list[StoredConfig]) -> Table:
    table = OneLineTable(
        *("version", "changed", "change", "size", "sha256", "overrides"),
        title="config history",
        cut_first=("overrides", "change"),
    )
    for item in history:
        document = item.document
        table.add_row(
            str(document.version),
            document.changed_at.isoformat(timespec="seconds"),
            document.change,
            filesize.decimal(len(document.content.data)),
            document.content.sha256.removeprefix("sha256:")[:12],
            str(len(document.overrides)),
        )
    return table


def config_diff(old: ConfigDocument, new: ConfigDocument) -> list[str]:
    """A unified diff of the base content, then what changed in the overrides."""
    label = f"{new.service}/{new.name}"
    try:
        before = old.content.data.decode().splitlines(keepends=True)
        after = new.content.data.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        same = old.content == new.content
        lines = [] if same else [f"binary {label} differs (v{old.version} -> v{new.version})\n"]
    else:
        lines = list(
            difflib.unified_diff(
                before, after, f"{label} v{old.version}", f"{label} v{new.version}"
            )
        )
    olds = {o.describe(): o.content.sha256 for o in old.overrides}
    news = {o.describe(): o.content.sha256 for o in new.overrides}
    for scope in sorted(olds.keys() | news.keys()):
        if scope not in news:
            lines.append(f"override {scope}: removed\n")
        elif scope not in olds:
            lines.append(f"override {scope}: added\n")
        elif olds[scope] != news[scope]:
            lines.append(f"override {scope}: changed\n")
    return lines
