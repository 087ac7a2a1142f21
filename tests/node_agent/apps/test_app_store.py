"""The agent's record of the apps it applied survives an upgrade of the agent: a file
written before completions were recorded still reads (the agent's state dir is kept)."""

from __future__ import annotations

import json
from pathlib import Path

from node_agent.apps.store import AppStore
from protocol.app import AppSpec, Member
from protocol.spec import ServiceSpec

APP = AppSpec(
    name="shop",
    members=(Member(name="web", spec=ServiceSpec(name="shop-web", image="r.local/web:1")),),
)


def test_an_app_recorded_by_an_older_agent_reads_with_nothing_completed(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    (tmp_path / "shop.json").write_text(json.dumps(APP.model_dump(mode="json")))
    assert store.get("shop") == APP
    assert store.completed("shop") == set()
    assert store.names() == ["shop"]


def test_an_app_is_recorded_with_the_members_that_completed(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    store.put(APP, {"web"})
    assert store.get("shop") == APP
    assert store.completed("shop") == {"web"}
    store.forget("shop")
    assert (store.get("shop"), store.completed("shop"), store.names()) == (None, set(), [])
