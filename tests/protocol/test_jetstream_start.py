"""Which JetStream failures a starting side waits out, and which it reports at once."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from protocol.jetstream_start import jetstream_starting, waiting_line

STARTING = [
    TimeoutError(),
    nats.errors.TimeoutError(),
    nats.errors.NoRespondersError(),
    nats.js.errors.ServiceUnavailableError(code=503, description="JetStream not ready"),
    nats.js.errors.NotFoundError(code=404, err_code=10059, description="stream not found"),
    nats.js.errors.BadRequestError(
        code=400, err_code=10005, description="no suitable peers for placement"
    ),
]
REFUSED = [
    nats.js.errors.BadRequestError(
        code=400, err_code=10058, description="stream name already in use"
    ),
    nats.js.errors.APIError(code=403, description="permissions violation"),
    nats.errors.ConnectionClosedError(),
]


@pytest.mark.parametrize("exc", STARTING, ids=repr)
def test_a_cluster_still_starting_is_waited_for(exc: BaseException) -> None:
    assert jetstream_starting(exc)


@pytest.mark.parametrize("exc", REFUSED, ids=repr)
def test_a_refusal_is_not_waited_for(exc: BaseException) -> None:
    assert not jetstream_starting(exc)


def test_the_waiting_line_names_jetstreams_own_reason_or_the_missing_answer() -> None:
    placement = STARTING[-1]
    assert waiting_line(placement) == (
        "JetStream is not ready (no suitable peers for placement); waiting"
    )
    assert waiting_line(TimeoutError()) == (
        "JetStream is not ready (no answer; a cluster still electing its leader?); waiting"
    )
