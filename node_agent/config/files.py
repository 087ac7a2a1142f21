"""A service's config directory on the host, and the record of what was applied to it.

Files are replaced atomically (temp file, fsync, rename) and read back to check their
hash, so a container never sees half a file and a torn write is never reported as done.
The applied record (one JSON file per service in the state dir) is what makes a restarted
agent catch up without applying a change twice.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from node_agent.state_files import read_json, write_atomically, write_json
from protocol.config_files import content_hash
from protocol.errors import AgentError


class ConfigFault(AgentError):
    """A config file could not be read from the store, written, or verified on disk."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConfigDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str) -> bytes | None:
        try:
            return self._file(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigFault(
                "config_unreadable", f"cannot read {self._file(name)}: {exc}"
            ) from exc

    def sha256(self, name: str) -> str | None:
        data = self.read(name)
        return None if data is None else content_hash(data)

    def write(self, name: str, data: bytes, sha256: str) -> None:
        """Replace the file atomically and prove it holds ``sha256``."""
        target = self._file(name)
        try:
            write_atomically(target, data)
            os.chmod(target, 0o644)  # the container's user is rarely root
            written = target.read_bytes()
        except OSError as exc:
            raise ConfigFault("config_unwritable", f"cannot write {target}: {exc}") from exc
        if content_hash(written) != sha256:
            raise ConfigFault(
                "config_hash_mismatch", f"{target} does not hold {sha256} after writing it"
            )

    def remove(self, name: str) -> None:
        try:
            self._file(name).unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigFault(
                "config_unwritable", f"cannot remove {self._file(name)}: {exc}"
            ) from exc

    def put(self, name: str, data: bytes | None, sha256: str | None) -> None:
        """Write ``data``, or remove the file when it is None."""
        if data is None or sha256 is None:
            self.remove(name)
        else:
            self.write(name, data, sha256)

    def writable(self) -> str | None:
        """Why files cannot be written here, or None if they can."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {self.path}: {exc}"
        if not os.access(self.path, os.W_OK | os.X_OK):
            return f"{self.path} is not writable"
        return None


@dataclass(frozen=True)
class Applied:
    """What the agent last did with one file."""

    version: int
    sha256: str | None
    """Of the content on disk (None: no file)."""
    kv_revision: int | None = None
    """The fleet_config revision handled last; None when a rollout command wrote it."""
    rejected: bool = False
    """That revision failed verification and the previous file was put back."""


class AppliedConfigs:
    """Per service, per file: the last change handled, in ``<state>/config-applied``."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, service: str) -> Path:
        return self._dir / f"{service}.json"

    def get(self, service: str, name: str) -> Applied | None:
        entry = (read_json(self._path(service)) or {}).get(name)
        return Applied(**entry) if entry else None

    def put(self, service: str, name: str, applied: Applied) -> None:
        record = read_json(self._path(service)) or {}
        record[name] = applied.__dict__
        write_json(self._path(service), record)

    def forget(self, service: str, name: str) -> None:
        record = read_json(self._path(service)) or {}
        if record.pop(name, None) is not None:
            write_json(self._path(service), record)

    def names(self, service: str) -> list[str]:
        return sorted(read_json(self._path(service)) or {})

    # A file written but not yet verified: what it held before, kept until the change
    # ends, so an agent killed in between can still verify it or put the old one back.

    def _unverified_path(self, service: str, name: str) -> Path:
        return self._dir / "unverified" / f"{service}.{name}.json"

    def unverified(self, service: str, name: str) -> tuple[bytes | None, str | None] | None:
        """What ``name`` held before a change that was written and never verified."""
        kept = read_json(self._unverified_path(service, name))
        if kept is None:
            return None
        data = base64.b64decode(kept["data"]) if kept["data"] is not None else None
        return data, kept["sha256"]

    def writing(self, service: str, name: str, data: bytes | None, sha256: str | None) -> None:
        """Keep what ``name`` holds before it is replaced. Renamed into place but not
        fsynced (like the seen-signatures log): it must survive the agent's own death,
        and an fsync on the event loop would hold up the change's events on a slow disk."""
        encoded = base64.b64encode(data).decode() if data is not None else None
        path = self._unverified_path(service, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps({"data": encoded, "sha256": sha256}))
        os.replace(temp, path)

    def verified(self, service: str, name: str) -> None:
        self._unverified_path(service, name).unlink(missing_ok=True)
