"""What an app's rolled-back update tells about each member it replaced: the failing
member's bundle (why: its exit code, last log lines, probe results), and, for each member
put back because of it, its new container's last log lines (the cache's log often says
why the web that depends on it failed)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from node_agent.runtime import DockerRuntime
from node_agent.update.probes import HealthVerdict
from protocol.errors import AgentError
from protocol.models import FailureBundle, Reason

LOG_LINES = 20
LINE_LENGTH = 2000
"""A log line is cut to this: a reply's text fields are bounded (a stack trace printed
as one JSON line would make the reply invalid, and the restore would not happen)."""
RESTORED_LINES, RESTORED_LINE_LENGTH = 10, 500
"""Less for a member put back because of another's failure: an app of many members must
still fit its reply in one bus message."""


def bundle(text: str, code: str = "member_failed") -> FailureBundle:
    return FailureBundle(reason=Reason(code=code, text=text))


async def member_bundle(
    runtime: DockerRuntime, member: str, container: str, verdict: HealthVerdict
) -> FailureBundle:
    """The failing member's: its container's state and output, its probes' results."""
    info = await runtime.inspect_container(container)
    state = (info or {}).get("State") or {}
    return FailureBundle(
        reason=Reason(code="member_failed", text=f"{member}: {verdict.reason}"),
        exit_code=None if state.get("Running") else state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        last_log_lines=tuple(
            line[:LINE_LENGTH] for line in await runtime.logs_tail(container, LOG_LINES)
        ),
        probe_results=tuple(verdict.results),
    )


async def member_bundles(
    runtime: DockerRuntime,
    replaced: Iterable[str],
    failed: str | None,
    failure: FailureBundle,
    container_of: Callable[[str], str],
) -> dict[str, FailureBundle]:
    """A bundle per member the update replaced, read before they are put back (their new
    containers are removed then), and the failing member's own."""
    bundles: dict[str, FailureBundle] = {}
    cause = failed or "the update"
    for name in replaced:
        if name == failed:
            continue
        try:
            tail = await runtime.logs_tail(container_of(name), RESTORED_LINES)
        except AgentError:  # its log is only a help: the restore goes on
            tail = []
        reason = Reason(code="member_restored", text=f"{name}: put back, as {cause} failed")
        lines = tuple(line[:RESTORED_LINE_LENGTH] for line in tail)
        bundles[name] = FailureBundle(reason=reason, last_log_lines=lines)
    if failed is not None:
        bundles[failed] = failure
    return bundles
