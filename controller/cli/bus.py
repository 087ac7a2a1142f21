"""fleetctl hosts (the live list), pki init, hosts enroll, hosts revoke: the bus's
certificates and permissions; keys generate: the controller's command-signing key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from controller.cli import render_hosts
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
from controller.cli.typer_app import command_group
from controller.enrolment import write_bundle
from controller.pki import Pki
from controller.settings import load_settings
from controller.state.intents import Fleet
from protocol.errors import ConfigurationError
from protocol.labels import parse_labels
from protocol.models import HostFacts, utc_now
from protocol.signing import CommandVerifier, generate_key

pki_app = command_group("The bus's certificate authority.")
# No no_args_is_help: `fleetctl hosts` alone lists the hosts.
hosts_app = command_group("Hosts: the live list, and their bus credentials.", no_args_is_help=False)


@hosts_app.callback(invoke_without_command=True)
def hosts(
    context: typer.Context,
    nats_url: NatsOption = None,
    selector: Annotated[str | None, typer.Option(help="k=v,... labels to match")] = None,
    output: OutputOption = "table",
) -> None:
    """List the hosts that report to the fleet, with their services and last heartbeat
    (stale: older than FLEET_HOST_TIMEOUT); `hosts enroll` and `hosts revoke` manage
    their bus credentials."""
    if context.invoked_subcommand is not None:
        return
    check_output(output)
    wanted = parse_selector(selector)

    async def listed(fleet: Fleet) -> tuple[list[HostFacts], float]:
        return await fleet.hosts(wanted), fleet.host_timeout

    found, timeout = run_with_fleet(listed, nats_url)
    if output == "json":
        typer.echo(render_hosts.hosts_json(found, utc_now(), timeout))
    else:
        print_table(render_hosts.hosts_table(found, utc_now(), timeout))


PkiDir = Annotated[
    Path, typer.Option("--pki", envvar="FLEET_PKI_DIR", help="the PKI directory (pki init)")
]


@pki_app.command("init")
def pki_init(
    directory: Annotated[Path, typer.Option("--dir", help="where to create the PKI")],
    server_name: Annotated[
        list[str] | None,
        typer.Option(help="DNS name or IP of a NATS server (repeatable; default 127.0.0.1)"),
    ] = None,
) -> None:
    """Create the bus CA, the NATS server certificate and the controller's certificate.

    nats-server (deploy/nats/) includes the users.conf written here; `hosts enroll`
    adds each host to it."""
    names = tuple(server_name or ("127.0.0.1", "localhost"))
    try:
        controller = Pki(directory).init(names)
    except (ConfigurationError, OSError) as exc:
        fail(str(exc), EXIT_INVALID)
    typer.echo(f"CA:          {directory / 'ca.crt'}")
    typer.echo(f"server:      {directory / 'server.crt'} (names: {', '.join(names)})")
    typer.echo(f"controller:  {controller.cert} (FLEET_NATS_TLS_CERT, FLEET_NATS_TLS_KEY)")
    typer.echo(f"users:       {directory / 'users.conf'} (include it in nats-server.conf)")


@hosts_app.command("enroll")
def hosts_enroll(
    name: Annotated[str, typer.Argument(help="the host id (or a reader's name)")],
    pki: PkiDir,
    role: Annotated[
        str, typer.Option(help="host, or reader for a read-only user (dashboards)")
    ] = "host",
    bundle: Annotated[
        Path | None,
        typer.Option(help="also write everything the host needs to this tar (fleet-agent install)"),
    ] = None,
    nats_url: NatsOption = None,
    command_key: Annotated[
        list[str] | None,
        typer.Option(
            help="controller public key the agent trusts (repeatable; default: the public "
            "half of FLEET_SIGNING_KEY_FILE)"
        ),
    ] = None,
    labels: Annotated[str | None, typer.Option(help="the host's labels, k=v,...")] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned", help="a bundle with no command key: the agent runs unsigned ones"
        ),
    ] = False,
) -> None:
    """Issue NAME's client certificate and add its permissions to users.conf.

    Prints the permission block; reload nats-server (`nats-server --signal reload`) to
    let the new host in. With --bundle, the CA, the certificate and key, and an agent
    settings file (bus URLs, host id, labels, trusted command keys) go into one file of
    mode 0600: `fleet-agent install --bundle` on the host puts it in place."""
    if role not in ("host", "reader"):
        fail(f"--role must be host or reader, not {role}", EXIT_INVALID)
    chosen: Literal["host", "reader"] = "host" if role == "host" else "reader"
    if bundle is not None and chosen != "host":
        fail("--bundle is for hosts (it sets up an agent), not for a reader", EXIT_INVALID)
    store = Pki(pki)
    try:
        if bundle is not None:  # everything checked before the host is enrolled
            contents = _bundle_contents(bundle, nats_url, command_key, labels, allow_unsigned)
        issued = store.enroll(name, chosen)
        if bundle is not None:
            write_bundle(bundle, issued, store.ca_cert, *contents)
    except (ConfigurationError, OSError) as exc:
        fail(str(exc), EXIT_INVALID)
    typer.echo(f"# {issued.name}: certificate {issued.cert}, key {issued.key} (mode 0600)")
    if bundle is not None:
        typer.echo(f"# bundle: {bundle} (mode 0600; fleet-agent install --bundle {bundle.name})")
    else:
        typer.echo(f"# agent settings: nats_tls_ca={pki / 'ca.crt'}")
        typer.echo(f"#   nats_tls_cert={issued.cert} nats_tls_key={issued.key}")
    typer.echo(f"# added to {store.users_conf}; reload nats-server to apply:")
    typer.echo(store.permission_block(issued.name, issued.role))


def _bundle_contents(
    bundle: Path,
    nats_url: list[str] | None,
    command_key: list[str] | None,
    labels: str | None,
    allow_unsigned: bool,
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """The bus URLs, trusted command keys and labels a bundle carries, checked."""
    if bundle.exists():
        raise ConfigurationError(f"{bundle} exists already; choose another --bundle")
    settings = load_settings(nats_urls=tuple(nats_url) if nats_url else None)
    urls = settings.nats_urls or settings.nats_url  # not the loopback default
    if not urls:
        raise ConfigurationError(
            "a bundle needs the bus URLs as the host reaches them: --nats (or FLEET_NATS_URLS)"
        )
    signer = settings.signer()
    keys = tuple(command_key or ()) or ((signer.public_key,) if signer is not None else ())
    if not keys and not allow_unsigned:
        raise ConfigurationError(
            "a bundle needs the controller's command key (--command-key, or "
            "FLEET_SIGNING_KEY_FILE); --allow-unsigned for an agent that runs unsigned ones"
        )
    CommandVerifier(keys)  # a key that is no Ed25519 public key is refused here
    return urls, keys, parse_labels(labels) if labels else {}


@hosts_app.command("revoke")
def hosts_revoke(
    name: Annotated[str, typer.Argument(help="the host id (or reader) to remove")],
    pki: PkiDir,
) -> None:
    """Take NAME off users.conf and delete its key: after a nats-server reload its
    certificate is refused."""
    try:
        entry = Pki(pki).revoke(name)
    except (ConfigurationError, OSError) as exc:
        fail(str(exc), EXIT_INVALID)
    typer.echo(
        f"{name} revoked (certificate serial {entry['serial']}); "
        "reload nats-server (`nats-server --signal reload`) to apply"
    )


keys_app = command_group("The controller's command-signing keys.")


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
