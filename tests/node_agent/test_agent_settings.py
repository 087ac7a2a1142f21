"""fleet-agent settings: flags beat FLEET_* variables, which beat the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from node_agent.settings import load_agent_settings


def test_flags_beat_environment_which_beats_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'host_id = "from-file"\n'
        'container_prefix = "file-"\n'
        "heartbeat_interval = 7.5\n"
        'nats_urls = ["nats://127.0.0.1:4333"]\n'
        "[labels]\nrole = 'edge'\n"
    )
    monkeypatch.setenv("FLEET_CONTAINER_PREFIX", "env-")
    monkeypatch.setenv("FLEET_HEARTBEAT_INTERVAL", "3")
    settings = load_agent_settings(config, heartbeat_interval=1.0)
    assert settings.host_id == "from-file"
    assert settings.container_prefix == "env-"
    assert settings.heartbeat_interval == 1.0
    assert settings.nats_urls == ("nats://127.0.0.1:4333",)
    assert settings.labels == {"role": "edge"}


def test_a_config_file_with_an_invalid_host_id_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('host_id = "controller"\n')
    with pytest.raises(ValidationError, match="host_id"):
        load_agent_settings(config)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_agent_settings(tmp_path / "absent.toml")
