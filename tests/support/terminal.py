"""Run fleetctl as an operator sees it: in a pipe, or on a terminal of a given width."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.support.fleet import fleetctl_executable

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BUS_VARIABLES = ("FLEET_NATS_URL", "FLEET_NATS_URLS")


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any bus or width setting of the caller's, plus ``settings``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (*BUS_VARIABLES, "COLUMNS", "LINES") and not key.startswith("FLEET_")
    }
    return {**env, **settings}


def run_piped(*args: str, columns: int = 80, timeout: float = 60, **settings: str) -> Ran:
    """fleetctl with stdout and stderr to pipes, ``COLUMNS`` set as a shell would."""
    return run_piped_with(args, settings, columns=columns, timeout=timeout)


def run_piped_with(
    args: Sequence[str], settings: Mapping[str, str], *, columns: int = 80, timeout: float = 60
) -> Ran:
    """``run_piped`` with the environment settings as a mapping, for a caller that builds
    them (a ``**dict`` would also match ``columns`` and ``timeout``, which are not str)."""
    result = subprocess.run(
        [fleetctl_executable(), *args],
        env=clean_env(COLUMNS=str(columns), **settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Ran(result.returncode, result.stdout, result.stderr)


def run_in_terminal(*args: str, columns: int = 80, timeout: float = 60, **settings: str) -> Ran:
    """fleetctl on a pseudo-terminal ``columns`` wide; stdout without colour codes.

    stderr goes to a pipe, so that the two can be told apart.
    """
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(
        [fleetctl_executable(), *args],
        env=clean_env(TERM="xterm", **settings),
        stdin=secondary,
        stdout=secondary,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    os.close(secondary)
    output = _read_until_closed(primary)
    stderr = process.communicate(timeout=timeout)[1].decode()
    text = ANSI.sub("", output.decode(errors="replace")).replace("\r\n", "\n")
    return Ran(process.returncode, text, stderr)


def _read_until_closed(primary: int) -> bytes:
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError as exc:  # Linux: EIO once the child has closed the terminal
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
    return b"".join(chunks)
