"""Which NATS connections are allowed: TLS, or plaintext only on loopback or when told.

Both sides check their NATS URLs with this before connecting: a plaintext connection to
another machine would carry signed commands, registry names and logs in the clear, so
it is refused unless the operator says --insecure.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from protocol.bus_permissions import inbox_prefix
from protocol.errors import ConfigurationError

TLS_SCHEMES = frozenset({"tls", "wss"})


def is_loopback_host(host: str) -> bool:
    """localhost, or an address in 127.0.0.0/8 or ::1 (a name is never trusted as one)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(
        urllib.parse.urlsplit(url if "://" in url else f"nats://{url}").hostname or ""
    )


def check_transport(urls: Iterable[str], *, tls: bool, insecure: bool) -> None:
    """Raise ConfigurationError for a plaintext URL to a non-loopback address."""
    if tls or insecure:
        return
    for url in urls:
        scheme = urllib.parse.urlsplit(url).scheme if "://" in url else "nats"
        if scheme not in TLS_SCHEMES and not is_loopback_url(url):
            raise ConfigurationError(
                f"refusing a plaintext NATS connection to {url}: configure TLS "
                "(nats_tls_ca, nats_tls_cert, nats_tls_key) or pass --insecure"
            )


DEFAULT_PING_INTERVAL = 10.0
"""Seconds between keepalive pings to the NATS server (``FLEET_NATS_PING_INTERVAL``)."""
MAX_OUTSTANDING_PINGS = 3
"""Unanswered pings after which the link counts as dead and the client reconnects."""


class BusClientSettings(BaseModel):
    """The settings every bus client (agent, controller, fleetctl) connects with."""

    nats_tls_ca: Path | None = None
    """The bus CA (`fleetctl pki init`); with it the client speaks TLS to NATS."""
    nats_tls_cert: Path | None = None
    """This party's client certificate (`fleetctl pki init` / `hosts enroll`)."""
    nats_tls_key: Path | None = None
    nats_insecure: bool = False
    """Allow plaintext NATS to a non-loopback address (--insecure)."""
    nats_ping_interval: float = Field(default=DEFAULT_PING_INTERVAL, gt=0, le=600)
    """Keepalive: a silent link is noticed after 3 unanswered pings, then reconnected."""

    def bus_connect_options(self, urls: Iterable[str], user: str) -> dict[str, Any]:
        """nats.connect keyword arguments: keepalive, and TLS with a client certificate.

        The keepalive notices a link that went silent (a partition drops packets, it
        does not close connections) within ``nats_ping_interval`` times
        ``MAX_OUTSTANDING_PINGS``, and the client then reconnects. nats-py's own
        defaults take four minutes, during which commands to the host are lost and its
        events pile up unsent.

        The one place in protocol that reads files (the CA, certificate and key named in
        the settings), so every client sets TLS up the same way; ConfigurationError for
        plaintext to another machine without nats_insecure. ``user`` is the name the
        certificate was issued to: replies come back on its own inbox prefix, the only
        one its permissions let it read.
        """
        ca, cert, key = self.nats_tls_ca, self.nats_tls_cert, self.nats_tls_key
        check_transport(urls, tls=ca is not None, insecure=self.nats_insecure)
        options: dict[str, Any] = {
            "ping_interval": self.nats_ping_interval,
            "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        }
        if ca is None:
            return options
        if (cert is None) != (key is None):
            raise ConfigurationError("nats_tls_cert and nats_tls_key are set together")
        try:
            context = ssl.create_default_context(cafile=str(ca))
            if cert is not None and key is not None:
                context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            # The message names the file, never a key's content.
            raise ConfigurationError(f"cannot load the NATS TLS files: {exc}") from exc
        options["tls"] = context
        quiet_tls_eof_notice()
        if cert is not None:
            options["inbox_prefix"] = inbox_prefix(user)
        return options


class _TlsEofNotice(logging.Filter):
    """nats-py upgrades a plain connection to TLS, and asyncio then logs a harmless
    notice each time the server closes one ("returning true from eof_received() has no
    effect when using ssl"). It said nothing to an operator but came out of every
    fleetctl command over TLS."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect" not in record.getMessage()


def quiet_tls_eof_notice() -> None:
    """Drop that notice from asyncio's log (once per process)."""
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _TlsEofNotice) for f in asyncio_log.filters):
        asyncio_log.addFilter(_TlsEofNotice())
