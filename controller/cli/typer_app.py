"""How fleetctl's commands read: help that fits 80 columns, usage errors in two lines.

typer's rich help squeezes the option column of a wide command into a narrow terminal or a
pipe and cuts names to `--max-unavailab…`; click's plain help keeps every name whole and
wraps the description beside it instead. A usage error is two plain lines (what is wrong
with which option, and where help is), like every other error of fleetctl.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperGroup


@contextmanager
def plain_usage_errors() -> Iterator[None]:
    """A usage error from parsing becomes ``fleetctl: <problem>`` and a pointer to help."""
    try:
        yield
    except typer.TyperException as exc:  # click's ClickException, UsageError, BadParameter
        context = getattr(exc, "ctx", None)
        message = exc.format_message()
        if context is not None and message == context.get_help():
            typer.echo(message, err=True)  # a group given no command: its help is the answer
        else:
            typer.echo(f"fleetctl: {message}", err=True)
            if context is not None:
                typer.echo(f"Try '{context.command_path} --help' for help.", err=True)
        raise typer.Exit(exc.exit_code) from exc


class PlainErrorsGroup(TyperGroup):
    """The top group: every command is parsed below it, so its errors pass through here."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        with plain_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with plain_usage_errors():
            return super().invoke(ctx)


def command_group(help: str, **options: Any) -> typer.Typer:
    """A fleetctl command group with plain (click) help; ``options`` as for typer.Typer."""
    options.setdefault("no_args_is_help", True)
    return typer.Typer(help=help, rich_markup_mode=None, **options)
