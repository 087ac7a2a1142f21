"""`fleetctl hosts enroll NAME --bundle out.tar`: one file with everything a new host needs.

The bundle (protocol.bundle) holds the bus CA, the host's certificate and key, and the
agent's settings file: the bus URLs, the host id and labels, and the controller's public
command keys. The key is mode 0600 inside it and the bundle file itself is 0600.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import tomli_w

from controller.pki import Issued
from protocol import bundle
from protocol.errors import ConfigurationError


def write_bundle(
    out: Path,
    issued: Issued,
    ca_cert: Path,
    nats_urls: tuple[str, ...],
    command_keys: tuple[str, ...],
    labels: dict[str, str],
) -> None:
    """Write the bundle to ``out``, which must not exist yet (it carries a secret)."""
    settings = bundle.agent_settings(issued.name, nats_urls, command_keys, labels)
    contents = {
        bundle.CA_FILE: ca_cert.read_bytes(),
        bundle.CERT_FILE: issued.cert.read_bytes(),
        bundle.KEY_FILE: issued.key.read_bytes(),
        bundle.SETTINGS_FILE: tomli_w.dumps(settings).encode(),
    }
    try:
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{out} exists already; choose another --bundle") from None
    with os.fdopen(descriptor, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for name in bundle.MEMBERS:
            _add(tar, name, contents[name], 0o600 if name in bundle.SECRET_MEMBERS else 0o644)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))
