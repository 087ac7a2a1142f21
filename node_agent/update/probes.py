"""Health probes (http, tcp, exec, docker) and the wait for a container to prove health.

Semantics, as in Nomad's healthy_deadline and Kubernetes' startup probes: before the
container first passes, only the deadline can fail it (a slow starter is not punished
for warming up); once it has passed, ``failure_threshold`` consecutive failures or an
exit fail it; it is healthy after passing continuously for ``min_healthy_time``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from node_agent.runtime import DockerRuntime
from protocol.errors import RuntimeFault
from protocol.models import HookResult, ProbeResult, utc_now
from protocol.spec import (
    UNCHECKED_DEADLINE,
    UNCHECKED_RUN,
    DockerHealthProbe,
    ExecProbe,
    HealthCheck,
    HttpProbe,
    Probe,
    TcpProbe,
)

MAX_KEPT_RESULTS = 10
_MAX_BODY = 65536


async def probe_once(
    probe: Probe | None, runtime: DockerRuntime, container: str, timeout: float
) -> ProbeResult:
    """One probe. ``None`` means no probe is configured: running counts as healthy."""
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
        # that arrives as the probe completes, and an agent stopped mid-verification
        # would then never stop (seen in CI).
        async with asyncio.timeout(timeout + 1):
            ok, output = await _dispatch(probe, runtime, container, timeout)
    except TimeoutError:
        ok, output = False, f"probe timed out after {timeout}s"
    except OSError as exc:
        ok, output = False, f"{type(exc).__name__}: {exc}"
    except RuntimeFault as exc:  # e.g. exec into a container that is restarting
        ok, output = False, exc.message
    return ProbeResult(at=utc_now(), ok=ok, output=output[:2000])


async def _dispatch(
    probe: Probe | None, runtime: DockerRuntime, container: str, timeout: float
) -> tuple[bool, str]:
    match probe:
        case HttpProbe():
            return await _http(probe, timeout)
        case TcpProbe():
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(probe.host, probe.port)
            writer.close()
            await writer.wait_closed()
            return True, f"tcp {probe.host}:{probe.port} accepted"
        case ExecProbe():
            code, output = await runtime.exec(container, list(probe.command), timeout)
            return code == 0, f"exit {code}: {output.strip()}"
        case DockerHealthProbe():
            info = await runtime.inspect_container(container)
            health = ((info or {}).get("State") or {}).get("Health") or {}
            status = health.get("Status", "none")
            last = (health.get("Log") or [{}])[-1].get("Output", "")
            return status == "healthy", f"docker health {status}: {str(last).strip()}"
        case None:
            info = await runtime.inspect_container(container)
            running = bool(((info or {}).get("State") or {}).get("Running"))
            return running, "running" if running else "not running"
    raise AssertionError(f"unknown probe {probe!r}")  # pragma: no cover


async def _http(probe: HttpProbe, timeout: float) -> tuple[bool, str]:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(probe.host, probe.port)
    try:
        request = (
            f"GET {probe.path} HTTP/1.0\r\nHost: {probe.host}\r\nUser-Agent: fleet-agent\r\n\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read(_MAX_BODY)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.decode(errors="replace").partition("\r\n\r\n")
    status_line = head.split("\r\n", 1)[0]
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    ok = status in probe.expect_status and (
        probe.body_contains is None or probe.body_contains in body
    )
    return ok, f"http {probe.path} -> {status}: {body.strip()[:200]}"


@dataclass
class HealthVerdict:
    healthy: bool
    reason: str
    results: list[ProbeResult] = field(default_factory=list)
    exit_code: int | None = None
    oom_killed: bool = False
    hooks: tuple[HookResult, ...] = ()
    """A post_update hook that failed after the probes passed."""


async def wait_until_healthy(
    check: HealthCheck | None,
    runtime: DockerRuntime,
    container: str,
    on_first_pass: Callable[[], Awaitable[None]] | None = None,
    *,
    serving: bool = False,
) -> HealthVerdict:
    """Probe ``container`` until it proves healthy or fails; see the module doc.

    ``serving``: the container was healthy already (a config reload, not a start), so
    failures count from the first probe on; there is no warm-up to forgive.
    """
    probe: Probe | None = check.probe if check else None
    period = check.period if check else 1.0
    timeout = check.timeout if check else 2.0
    threshold = check.failure_threshold if check else 1
    min_healthy = check.min_healthy_time if check else UNCHECKED_RUN
    deadline = time.monotonic() + (check.healthy_deadline if check else UNCHECKED_DEADLINE)
    if check and check.initial_delay:
        await asyncio.sleep(check.initial_delay)
    results: list[ProbeResult] = []
    healthy_since: float | None = None
    has_passed = serving
    failures = 0
    while True:
        state = ((await runtime.inspect_container(container)) or {}).get("State") or {}
        if not state.get("Running"):
            return HealthVerdict(
                False,
                f"container exited with code {state.get('ExitCode')}"
                + (" (OOM killed)" if state.get("OOMKilled") else ""),
                results,
                exit_code=state.get("ExitCode"),
                oom_killed=bool(state.get("OOMKilled")),
            )
        result = await probe_once(probe, runtime, container, timeout)
        results = [*results, result][-MAX_KEPT_RESULTS:]
        now = time.monotonic()
        if result.ok:
            failures = 0
            if healthy_since is None:
                healthy_since = now
            if not has_passed:
                has_passed = True
                if on_first_pass is not None:
                    await on_first_pass()
            if now - healthy_since >= min_healthy:
                return HealthVerdict(True, "healthy", results)
        elif has_passed:
            failures += 1
            healthy_since = None  # min_healthy_time means continuously healthy
            if failures >= threshold:
                return HealthVerdict(
                    False, f"{failures} consecutive probe failures after passing", results
                )
        if now >= deadline:
            return HealthVerdict(False, "not healthy within the healthy deadline", results)
        await asyncio.sleep(min(period, max(0.0, deadline - now)))
