"""How the agent connects to NATS: TLS with its host certificate, its own reply inboxes.

Plaintext to anything but loopback is refused before connecting unless --insecure.
"""

from __future__ import annotations

from typing import Any

from node_agent.settings import AgentSettings
from protocol.transport import bus_connect_options


def bus_options(settings: AgentSettings) -> dict[str, Any]:
    """Keyword arguments for nats.connect; ConfigurationError for an unsafe setup."""
    return bus_connect_options(
        settings.nats_urls,
        ca=settings.nats_tls_ca,
        cert=settings.nats_tls_cert,
        key=settings.nats_tls_key,
        insecure=settings.nats_insecure,
        user=settings.host_id,
    )
