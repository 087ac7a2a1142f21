"""fleet-agent as a real child process, for tests that SIGKILL, SIGTERM or SIGSTOP it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

EXIT_WAIT = 30.0


def fleet_agent_executable() -> str:
    """The console script installed next to this interpreter (make test installs it)."""
    candidate = Path(sys.executable).parent / "fleet-agent"
    if not candidate.exists():
        raise RuntimeError(f"{candidate} is missing: pip install -e . first")
    return str(candidate)


def agent_args(
    nats_url: str | Sequence[str],
    host: str,
    docker_host: str,
    state_dir: Path,
    container_prefix: str | None = None,
    *extra: str,
) -> list[str]:
    """The flags of `fleet-agent run` for one agent of a test or benchmark."""
    urls = [nats_url] if isinstance(nats_url, str) else list(nats_url)
    args = [
        *(f"--nats={url}" for url in urls),
        f"--host-id={host}",
        f"--docker-host={docker_host}",
        f"--state-dir={state_dir}",
    ]
    if container_prefix is not None:
        args.append(f"--container-prefix={container_prefix}")
    return [*args, *extra]


@dataclass
class AgentProcess:
    """One ``fleet-agent run``; its output goes to ``log_path`` for the test report."""

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    launcher: tuple[str, ...] = ()
    """A prefix the agent runs under, such as nsenter into an isolated host's namespace."""
    process: asyncio.subprocess.Process | None = None

    async def start(self, **extra_env: str) -> None:
        assert self.process is None or self.process.returncode is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.launcher,
                fleet_agent_executable(),
                "run",
                *self.args,
                env={**os.environ, **self.env, **extra_env},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def send(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, timeout: float = EXIT_WAIT) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> int | None:
        """SIGCONT then SIGTERM, and SIGKILL if it will not go: always leaves it dead."""
        if not self.running:
            return self.process.returncode if self.process else None
        self.send(signal.SIGCONT)
        self.send(signal.SIGTERM)
        try:
            return await self.wait()
        except TimeoutError:
            self.send(signal.SIGKILL)
            return await self.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_logged(self, text: str, deadline_s: float = 30.0) -> None:
        """Until the agent's output contains ``text``; AssertionError with the log if never."""
        for _ in range(int(deadline_s * 5)):
            if text in self.log_text():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the agent never logged {text!r}:\n{self.log_text()}")
