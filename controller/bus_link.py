"""fleetctl's and the controller's NATS connection: every server, quiet trouble.

All URLs go to nats-py, which fails over between them (and to the servers the cluster
announces). While a server is away nothing prints the client library's tracebacks: the
connection's state is told once per change, as the agent does (node_agent/daemon.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import nats.errors
from nats.aio.client import Client

from protocol.errors import BrokerError

_USERINFO = re.compile(r"^([a-z]+://)?[^/@]*@")
CONNECT_TIMEOUT = 5
"""Seconds to wait for one server before trying the next."""


class NoTraceback(logging.Filter):
    """nats-py logs an unexpected error in its read loop with the whole traceback; one
    line with the exception is what an operator can use."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = ()
            record.exc_info = None
        return True


_nats_log = logging.getLogger("nats.aio.client")
if not any(isinstance(f, NoTraceback) for f in _nats_log.filters):
    _nats_log.addFilter(NoTraceback())


def shown(urls: Sequence[str]) -> str:
    """The URLs for a message, without a user or password any of them carries."""
    return ", ".join(_USERINFO.sub(r"\1", url) for url in urls)


def why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class BusLink:
    """One connection to the bus with callbacks that tell its state once per change.

    ``announce_connect``: the long-lived controller logs its first connection and the
    failed attempts before it; a one-shot fleetctl command says nothing until something
    changes, and fails with one line when no server answers.
    """

    def __init__(self, urls: Sequence[str], log: logging.Logger, *, announce_connect: bool):
        self.urls = tuple(urls)
        self.client = Client()
        self._log = log
        self._announce = announce_connect
        self._connected: bool | None = None
        self._last_error: BaseException | None = None
        self._closing = False

    async def connect(self, options: dict[str, Any], **extra: Any) -> Client:
        """Connect to the first server that answers; BrokerError (one line) if none does."""
        try:
            await self.client.connect(
                servers=list(self.urls),
                dont_randomize=True,  # in the order given: an operator's first choice first
                connect_timeout=CONNECT_TIMEOUT,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
                **options,
                **extra,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            await self.close()
            reason = why(self._last_error or exc)
            raise BrokerError(f"cannot reach NATS at {shown(self.urls)}: {reason}") from exc
        self._change(True, f"connected to NATS at {self._server()}")
        return self.client

    async def connect_until(
        self, stop: asyncio.Event, options: dict[str, Any], **extra: Any
    ) -> Client | None:
        """Keep trying (give ``max_reconnect_attempts=-1``) until connected, or None once
        ``stop`` is set first."""
        connecting = asyncio.create_task(self.connect(options, **extra), name="nats-connect")
        stopping = asyncio.create_task(stop.wait(), name="nats-connect-stop")
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (connecting, stopping):
            task.cancel()
        await asyncio.gather(connecting, stopping, return_exceptions=True)
        if connecting.cancelled():
            await self.close()
            return None
        return connecting.result()  # or its BrokerError

    async def close(self) -> None:
        """Close, even when the connection is already lost for good.

        Its final flush then fails: with a nats error, an OSError, or over TLS after a
        reconnect with AttributeError (asyncio has torn the TLS transport down under
        nats-py). None of these is worth a traceback on the way out.
        """
        self._closing = True
        with suppress(nats.errors.Error, OSError, AttributeError):
            await self.client.close()

    def _change(self, connected: bool, message: str) -> None:
        # Once per change of state, not once per retry; before the first connection
        # only the long-lived process speaks.
        if self._connected is not connected and (self._announce or self._connected is not None):
            (self._log.info if connected else self._log.warning)(message)
        self._connected = connected

    def _server(self) -> str:
        url = self.client.connected_url
        return f"{url.hostname}:{url.port}" if url is not None else "?"

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._change(False, "disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        self._change(True, f"reconnected to NATS at {self._server()}")

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if self._connected is None:  # the first connection is still failing
            if self._announce and not self._closing:
                self._change(False, f"cannot reach NATS ({why(exc)}); retrying")
        elif "permissions violation" in str(exc).lower():
            # The bus refused something: permissions and code have drifted apart.
            self._log.error("NATS refused: %s", exc)
        else:
            self._log.debug("nats: %r", exc)


def advertises_jetstream(nc: Client) -> bool:
    """Whether the server the client is connected to said it runs JetStream (the
    ``jetstream`` flag of its INFO; nats-py keeps INFO only in a private attribute).
    A server that says so but does not answer is still starting; one that does not
    may be a leaf node relaying to JetStream elsewhere, and is not waited for."""
    info: dict[str, object] = getattr(nc, "_server_info", {})
    return bool(info.get("jetstream"))
