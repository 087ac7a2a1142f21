"""How JetStream answers while a cluster is starting or failing over, for both sides.

Nodes, controller and agents often boot together. Until the cluster has elected its
leader, and until enough peers have joined to place the replicas asked for, JetStream
requests time out or are refused in a few known ways; each side asks again instead of
exiting. Anything else (a permission refused, a conflicting stream) is a real error.

This module only classifies the client library's exceptions: it does no I/O, which is
why it is the one place in protocol allowed to import nats (see pyproject's contract).
"""

from __future__ import annotations

from collections.abc import Callable

import nats.errors
import nats.js.errors
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

STARTING_ERRORS = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    # A create that timed out is carried out once the leader is elected; until the new
    # stream's own group is formed, it exists for a create and not yet for a read.
    nats.js.errors.NotFoundError,
)
FAILOVER_SECONDS = 30.0
FAILOVER_ERRORS = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)
NO_PEERS_YET = 10005
"""JetStream's "no suitable peers for placement": a leader is elected but fewer nodes
than the replicas asked for have joined it yet (or, if it lasts, ever will)."""


def jetstream_starting(exc: BaseException) -> bool:
    """Whether a JetStream request failed as it does while a cluster is starting."""
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == NO_PEERS_YET:
        return True
    return isinstance(exc, STARTING_ERRORS)


def why_not_ready(exc: BaseException | None) -> str:
    """A few words for the log: JetStream's own description where it gave one."""
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        return exc.description
    if isinstance(exc, nats.errors.NoRespondersError):
        return "no JetStream on the server yet"
    if exc is None or isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return "no answer; a cluster still electing its leader?"
    return str(exc) or type(exc).__name__


def waiting_line(exc: BaseException | None) -> str:
    return f"JetStream is not ready ({why_not_ready(exc)}); waiting"


def tell_once_per_reason(on_wait: Callable[[str], None]) -> Callable[[RetryCallState], None]:
    """A tenacity ``before_sleep`` that logs the waiting line once per reason, not once
    per retry: an operator sees each change of state, not a flood."""
    told: set[str] = set()

    def tell(state: RetryCallState) -> None:
        line = waiting_line(state.outcome.exception() if state.outcome else None)
        if line not in told:
            told.add(line)
            on_wait(line)

    return tell


def failover_retries() -> AsyncRetrying:
    """Retries of a read while a cluster elects a new leader for a bucket (a node was
    lost): the request times out or finds no responder for a few seconds, then works."""
    return AsyncRetrying(
        retry=retry_if_exception_type(FAILOVER_ERRORS),
        wait=wait_exponential(multiplier=0.25, max=2.0),
        stop=stop_after_delay(FAILOVER_SECONDS),
        reraise=True,
    )
