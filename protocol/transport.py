"""Which NATS connections are allowed: TLS, or plaintext only on loopback or when told.

Both sides check their NATS URLs with this before connecting: a plaintext connection to
another machine would carry signed commands, registry names and logs in the clear, so
it is refused unless the operator says --insecure.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable

from protocol.errors import ConfigurationError

TLS_SCHEMES = frozenset({"tls", "wss"})


def is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
