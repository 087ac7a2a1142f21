"""HTTP for the registry client: httpx, bounded in time and size, its errors made ours.

One ``httpx.AsyncClient`` serves one conversation with a registry (a host's pre-flight
check, a rollout's vetting): the login probe, manifests and the config blob then share a
kept-alive connection, and the conversation closes it. Redirects are followed by httpx,
which drops the ``Authorization`` header when the next hop is another origin (scheme,
host or port): registries send blob downloads to object storage, which must never see
the registry's password or token.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from dataclasses import dataclass

import httpx

from protocol.errors import FleetError
from protocol.models import Reason

MAX_DOCUMENT = 4 * 1024 * 1024
"""A manifest or image config larger than this is refused rather than read."""
MAX_REDIRECTS = 10
"""As many as urllib followed before; a registry needs one, to its blob storage."""
_DEADLINE_SLACK = 1.0
"""The whole exchange gets this much longer than one phase (connect, read...), so that
httpx names the phase that hung; the deadline is for a server that drips bytes."""
_MAX_CAUSES = 8
"""How deep to look under an exception for the error an operator can act on."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: httpx.Headers
    body: bytes


class RegistryFailure(FleetError):
    """The registry could not answer what was asked; ``reason`` says which way."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.text)
        self.reason = reason
        self.code = reason.code


TRUST_STORE_SECONDS = 300
"""How long one loaded trust store serves: loading it costs ~35 ms of CPU, on the event
loop, per check; reloaded this often, a CA an operator adds is still picked up."""


@functools.lru_cache(maxsize=1)
def _trust_store(period: int) -> ssl.SSLContext:
    """The system's trust store, loaded once per ``period``."""
    return ssl.create_default_context()


def open_http(timeout: float) -> httpx.AsyncClient:
    """A client for one conversation; the caller closes it (``async with``)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        # The system's trust store, as urllib used and operators add private CAs to;
        # httpx's default would be certifi's bundle instead.
        verify=_trust_store(int(time.monotonic() // TRUST_STORE_SECONDS)),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        # Bodies are capped as they arrive; a compressed one would be capped only after
        # it was inflated, so none is asked for.
        headers={"Accept-Encoding": "identity"},
    )


async def fetch(
    http: httpx.AsyncClient,
    registry: str,
    url: str,
    *,
    headers: dict[str, str],
    timeout: float,
) -> Response:
    """GET ``url`` (following redirects); any answer is returned, a failure raised."""
    try:
        async with (
            asyncio.timeout(timeout + _DEADLINE_SLACK),
            http.stream("GET", url, headers=headers) as response,
        ):
            body = await _read_bounded(response, registry)
            return Response(response.status_code, response.headers, body)
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError) as exc:
        raise _failure(registry, exc) from exc


async def _read_bounded(response: httpx.Response, registry: str) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_DOCUMENT:
            raise RegistryFailure(
                Reason(
                    code="registry_error",
                    text=f"registry {registry} sent more than {MAX_DOCUMENT} bytes "
                    f"for {response.url.path}",
                )
            )
    return bytes(body)


def _failure(registry: str, exc: Exception) -> RegistryFailure:
    """The Reason an operator acts on: a certificate, a network path, or the registry."""
    causes = _causes(exc)
    tls = next((cause for cause in causes if isinstance(cause, ssl.SSLError)), None)
    said = str(exc) or "timed out"
    if tls is not None:
        code, text = "registry_tls", f"TLS with registry {registry} failed: {tls}"
    elif isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        # The socket's own error ("Connection refused", "Name or service not known"),
        # not anyio's "All connection attempts failed" wrapped around it.
        said = str(causes[-1]) or said
        code, text = "registry_unreachable", f"cannot connect to registry {registry}: {said}"
    elif isinstance(exc, httpx.UnsupportedProtocol) or not isinstance(
        exc, httpx.TransportError | TimeoutError
    ):
        # Too many redirects, or a redirect or token realm that is no http(s) URL.
        code, text = "registry_error", f"registry {registry}: {said}"
    else:
        code, text = "registry_unreachable", f"registry {registry}: {said}"
    return RegistryFailure(Reason(code=code, text=text))


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from, outermost first: httpx wraps httpcore's
    error, which wraps anyio's or ssl's, which may wrap the socket's."""
    chain = [exc]
    while len(chain) < _MAX_CAUSES:
        cause = chain[-1].__cause__ or chain[-1].__context__
        if cause is None or cause in chain:
            break
        chain.append(cause)
    return chain
