"""Reading an enrolment bundle (protocol.bundle) and putting its files in place.

A bundle is read whole into memory and checked before anything is written: exactly the
expected regular files, each small, and a settings file that parses. The host's key is
written with mode 0600 from its first byte, and never printed.
"""

from __future__ import annotations

import os
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import tomli_w
from pydantic import ValidationError

from node_agent.settings import AgentSettings
from node_agent.state_files import write_atomically
from protocol import bundle
from protocol.errors import ConfigurationError, summarise_invalid


@dataclass(frozen=True)
class Bundle:
    files: dict[str, bytes]
    settings: dict[str, Any]

    @property
    def host_id(self) -> str:
        return str(self.settings.get("host_id", ""))


def read_bundle(path: Path) -> Bundle:
    """The bundle at ``path``; ConfigurationError saying what is wrong with it."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            files = {member.name: _member_bytes(tar, member) for member in tar.getmembers()}
    except FileNotFoundError:
        raise ConfigurationError(f"no bundle at {path}") from None
    except (tarfile.TarError, OSError) as exc:
        raise ConfigurationError(f"{path} is not a Fleetwave bundle (a tar file): {exc}") from exc
    missing = [name for name in bundle.MEMBERS if name not in files]
    if missing:
        raise ConfigurationError(f"{path} is not a Fleetwave bundle: {', '.join(missing)} missing")
    try:
        settings = tomllib.loads(files[bundle.SETTINGS_FILE].decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"{path}: {bundle.SETTINGS_FILE} does not parse: {exc}") from exc
    try:
        AgentSettings(**settings)
    except ValidationError as exc:
        raise ConfigurationError(
            f"{path}: the agent settings in it are invalid: {summarise_invalid(exc)}"
        ) from exc
    return Bundle(files, settings)


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.name not in bundle.MEMBERS:
        raise ConfigurationError(f"unexpected member {member.name!r} in the bundle")
    if not member.isfile():
        raise ConfigurationError(f"{member.name} in the bundle is not a regular file")
    if member.size > bundle.MAX_MEMBER_BYTES:
        raise ConfigurationError(f"{member.name} in the bundle is too large ({member.size} B)")
    handle = tar.extractfile(member)
    assert handle is not None  # a regular file always has contents
    return handle.read()


def place_bundle(found: Bundle, config_dir: Path, seen_at: PurePosixPath) -> Path:
    """Write the bundle's files into ``config_dir`` and return the settings file.

    ``seen_at`` is where the agent will see ``config_dir`` (the same path for a service on
    the host; /etc/fleetwave inside the agent's container): the settings name the
    certificate files there.
    """
    if not config_dir.is_dir():  # one that exists keeps its mode: it may be /etc
        config_dir.mkdir(parents=True)
        os.chmod(config_dir, 0o750)
    for name in (bundle.CA_FILE, bundle.CERT_FILE, bundle.KEY_FILE):
        mode = 0o600 if name in bundle.SECRET_MEMBERS else 0o644
        write_atomically(config_dir / name, found.files[name], mode)
    settings = bundle.moved_to(found.settings, seen_at)
    target = config_dir / bundle.SETTINGS_FILE
    write_atomically(target, tomli_w.dumps(settings).encode(), 0o640)
    return target
