"""The names an agent command locks (and journals) its operation under: a service's
name, an app's journal key, and what an app's update or removal holds besides."""

from __future__ import annotations

from node_agent.apps.group import AppUpdater, app_journal_key
from node_agent.update.journal import Journal
from protocol.app import AppSpec
from protocol.errors import CommandRefused
from protocol.models import (
    ApplyAppCommand,
    ApplyCommand,
    Command,
    ConfigCommand,
    InspectCommand,
    PrepareAppCommand,
    PrepareCommand,
    RemoveCommand,
    RetireCommand,
    RollbackCommand,
    StageCommand,
    SwitchCommand,
)


def lock_name(command: Command) -> str:
    """What the command's lock and journal entry are named after."""
    if isinstance(command, PrepareCommand | ApplyCommand | StageCommand):
        return command.service.name
    if isinstance(command, ApplyAppCommand | PrepareAppCommand):
        return app_journal_key(command.app.name)
    if isinstance(
        command,
        RollbackCommand
        | RemoveCommand
        | InspectCommand
        | SwitchCommand
        | RetireCommand
        | ConfigCommand,
    ):
        return command.service
    raise CommandRefused("unknown_command", f"no service in {command.kind}")  # pragma: no cover


def also_held(command: Command, apps: AppUpdater | None, journal: Journal) -> list[str]:
    """What an operation holds besides its own name, each settled first if an earlier
    operation left it unfinished. An app's update: its members' services (no
    single-service command may touch a member, or its set-aside copy, meanwhile). A
    removal: the app of that name, if any (its journal entry, also while its first
    deploy runs, and its members), so it never races the app's update or recovery."""
    if isinstance(command, ApplyAppCommand):
        names = [m.spec.name for m in command.app.members]
        # Members the file dropped are removed by the update (and an unfinished update
        # settled first may record others): held too.
        had = _known_members(command.app.name, apps, journal)
        return [*names, *(name for name in had if name not in names)]
    if not isinstance(command, RemoveCommand) or apps is None:
        return []
    return [app_journal_key(command.service), *_known_members(command.service, apps, journal)]


def _known_members(name: str, apps: AppUpdater | None, journal: Journal) -> list[str]:
    """The member services of app ``name`` as this host knows it: what it last applied,
    and what an unfinished update of it (journaled) was putting in place."""
    if apps is None:
        return []
    found: list[str] = []
    entry = journal.get(app_journal_key(name))
    for app in (apps.store.get(name), AppSpec.model_validate(entry["app"]) if entry else None):
        for member in app.members if app is not None else ():
            if member.spec.name not in found:
                found.append(member.spec.name)
    return found
