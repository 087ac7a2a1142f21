"""fleetctl: the operator's command line, and the long-lived controller process.

The root app: each verb group lives in a module of its own (rollout.py, config.py,
bus.py for hosts, pki and keys, watch.py for events, logs, top and exporter, run.py
for the controller process). Exit codes are listed in base.py (and the README).
"""

from __future__ import annotations

import typer

from controller.cli import watch
from controller.cli.agent import agent_app
from controller.cli.apply import apply, delete_app, diff
from controller.cli.bus import hosts_app, keys_app, pki_app
from controller.cli.config import config_app
from controller.cli.rollout import rollout_app
from controller.cli.run import controller_app
from controller.cli.services import services
from controller.cli.typer_app import PlainErrorsGroup, command_group
from protocol import SCHEMA_VERSION
from protocol.version import fleetwave_version

app = command_group(
    "Roll container updates across a fleet of Docker hosts, safely.",
    name="fleetctl",
    add_completion=False,
    cls=PlainErrorsGroup,
)
app.add_typer(rollout_app, name="rollout")
app.add_typer(controller_app, name="controller")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(hosts_app, name="hosts")
app.add_typer(pki_app, name="pki")
app.add_typer(agent_app, name="agent")
app.add_typer(delete_app, name="delete")
app.command()(apply)
app.command()(diff)
app.command()(services)


@app.callback()
def _group() -> None:
    """fleetctl talks to the fleet over NATS; rollouts are driven by `fleetctl controller run`."""


@app.command()
def version() -> None:
    """Print fleetctl's version and the protocol schema version it speaks."""
    typer.echo(f"fleetctl {fleetwave_version()} (protocol schema {SCHEMA_VERSION})")


watch.register(app)
