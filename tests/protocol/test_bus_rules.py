"""Which NATS connections are allowed, and what each bus user may touch."""

from __future__ import annotations

import pytest

from protocol import subjects
from protocol.bus_permissions import controller_permissions, host_permissions, reader_permissions
from protocol.errors import ConfigurationError, InvalidSubject
from protocol.transport import check_transport


@pytest.mark.parametrize(
    "url",
    ["nats://127.0.0.1:4222", "nats://localhost:4222", "127.0.0.2:4222", "nats://[::1]:4222"],
)
def test_plaintext_to_loopback_is_allowed(url: str) -> None:
    check_transport([url], tls=False, insecure=False)


@pytest.mark.parametrize("url", ["nats://10.0.0.5:4222", "nats://nats.internal:4222", "10.0.0.5"])
def test_plaintext_to_another_machine_is_refused_unless_tls_or_insecure(url: str) -> None:
    with pytest.raises(ConfigurationError, match="refusing a plaintext NATS connection"):
        check_transport(["nats://127.0.0.1:4222", url], tls=False, insecure=False)
    check_transport([url], tls=True, insecure=False)
    check_transport([url], tls=False, insecure=True)
    check_transport(["tls://nats.internal:4222"], tls=False, insecure=False)


def test_a_host_may_publish_only_its_own_subjects_and_read_only_its_commands() -> None:
    rules = host_permissions("web-1")
    published = rules["publish"]["allow"]
    assert subjects.host_event_subject("web-1", "heartbeat").startswith("fleet.evt.web-1.")
    assert "fleet.evt.web-1.>" in published
    assert not any(p.startswith("fleet.cmd") or "web-2" in p for p in published)
    assert not any(p in ("$JS.API.>", "$KV.>", ">") for p in published)
    assert rules["subscribe"]["allow"] == ["fleet.cmd.web-1", "_INBOX.web-1.>"]


def test_a_reader_sends_no_command_and_the_controller_reads_only_its_own_inbox() -> None:
    assert not any(p.startswith("fleet.") for p in reader_permissions("dash")["publish"]["allow"])
    assert "_INBOX.>" not in controller_permissions("controller")["subscribe"]["allow"]
    assert "fleet.cmd.>" in controller_permissions("controller")["publish"]["allow"]


def test_a_name_that_is_not_a_token_gets_no_permissions() -> None:
    with pytest.raises(InvalidSubject, match="host id"):
        host_permissions("web.1.>")
