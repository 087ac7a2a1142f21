"""How the agent connects to NATS: TLS with its host certificate, its own reply inboxes.

Plaintext to anything but loopback is refused before connecting unless --insecure.
"""

from __future__ import annotations

import ssl
from typing import Any

from node_agent.settings import AgentSettings
from protocol.bus_permissions import inbox_prefix
from protocol.errors import ConfigurationError
from protocol.transport import check_transport


def bus_options(settings: AgentSettings) -> dict[str, Any]:
    """Keyword arguments for nats.connect; ConfigurationError for an unsafe setup."""
    tls = settings.nats_tls_ca is not None
    check_transport(settings.nats_urls, tls=tls, insecure=settings.nats_insecure)
    if not tls:
        return {}
    if (settings.nats_tls_cert is None) != (settings.nats_tls_key is None):
        raise ConfigurationError("nats_tls_cert and nats_tls_key are set together")
    try:
        context = ssl.create_default_context(cafile=str(settings.nats_tls_ca))
        if settings.nats_tls_cert is not None and settings.nats_tls_key is not None:
            context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    except (OSError, ssl.SSLError) as exc:
        # The message names the file, never a key's content.
        raise ConfigurationError(f"cannot load the NATS TLS files: {exc}") from exc
    # Replies come back on this host's own inbox prefix: its permissions allow no other.
    return {"tls": context, "inbox_prefix": inbox_prefix(settings.host_id)}
