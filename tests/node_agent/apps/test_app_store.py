"""The agent's record of the apps it applied reads back as written, also as one
development version wrote it (the app inside an ``app`` key): state dirs are kept."""

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


def test_an_app_reads_back_as_recorded_and_is_forgotten(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    store.put(APP)
    assert (store.get("shop"), store.names()) == (APP, ["shop"])
    store.forget("shop")
    assert (store.get("shop"), store.names()) == (None, [])


def test_an_app_a_development_version_wrapped_still_reads(tmp_path: Path) -> None:
    document = {"app": APP.model_dump(mode="json"), "completed": ["web"]}
    (tmp_path / "shop.json").write_text(json.dumps(document))
    assert AppStore(tmp_path).get("shop") == APP
