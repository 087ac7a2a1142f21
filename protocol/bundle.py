"""An enrolment bundle: everything a new host needs to join the fleet, in one tar file.

`fleetctl hosts enroll NAME --bundle out.tar` writes it; `fleet-agent install --bundle`
puts it in place. Both sides agree on these names and on the settings file's shape.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

CA_FILE = "ca.crt"
CERT_FILE = "host.crt"
KEY_FILE = "host.key"
SETTINGS_FILE = "agent.toml"
MEMBERS = (CA_FILE, CERT_FILE, KEY_FILE, SETTINGS_FILE)
"""The bundle holds exactly these regular files, at its top level."""
SECRET_MEMBERS = frozenset({KEY_FILE})
"""Mode 0600 in the bundle and wherever they are put; never printed."""
MAX_MEMBER_BYTES = 64 * 1024
DEFAULT_CONFIG_DIR = PurePosixPath("/etc/fleetwave")
TLS_SETTINGS = {"nats_tls_ca": CA_FILE, "nats_tls_cert": CERT_FILE, "nats_tls_key": KEY_FILE}
"""The agent settings that name the bundle's certificate files."""


def agent_settings(
    host_id: str,
    nats_urls: tuple[str, ...],
    command_keys: tuple[str, ...],
    labels: dict[str, str],
    config_dir: PurePosixPath = DEFAULT_CONFIG_DIR,
) -> dict[str, Any]:
    """The agent's settings file for a host whose bundle lies in ``config_dir``."""
    settings: dict[str, Any] = {"host_id": host_id, "nats_urls": list(nats_urls)}
    settings.update({key: str(config_dir / name) for key, name in TLS_SETTINGS.items()})
    if command_keys:
        settings["trusted_command_keys"] = list(command_keys)
    if labels:
        settings["labels"] = dict(labels)
    return settings


def moved_to(settings: dict[str, Any], config_dir: PurePosixPath) -> dict[str, Any]:
    """``settings`` with the certificate paths pointing into ``config_dir``."""
    moved = dict(settings)
    moved.update({key: str(config_dir / name) for key, name in TLS_SETTINGS.items()})
    return moved
