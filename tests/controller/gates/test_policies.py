"""The shipped Rego policies (deploy/policies) and the evaluator, with regopy."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from controller.gates.policy import PolicyError, evaluate, load_policies
from protocol.errors import ConfigurationError
from protocol.spec import ServiceSpec
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
SHIPPED = ROOT / "deploy" / "policies"
DATA = {"allowed_registries": ["127.0.0.1:5000"], "allowed_capabilities": ["NET_BIND_SERVICE"]}


def demo_spec() -> ServiceSpec:
    return ServiceSpec.model_validate(tomllib.loads((ROOT / "deploy/local/web.toml").read_text()))


def document(spec: ServiceSpec, image_user: str = "65534:65534") -> dict[str, Any]:
    return {
        "spec": spec.model_dump(mode="json"),
        "image": {
            "reference": spec.image,
            "registry": spec.image.split("/")[0],
            "config": {"User": image_user, "Cmd": ["/bin/demo-web"]},
        },
    }


def with_container(spec: ServiceSpec, **changes: Any) -> ServiceSpec:
    return spec.model_copy(update={"container": spec.container.model_copy(update=changes)})


def test_the_demo_spec_passes_every_shipped_policy() -> None:
    assert evaluate(load_policies((SHIPPED,)), document(demo_spec()), DATA) == []


def test_a_root_privileged_spec_is_denied_with_a_message_per_rule() -> None:
    bad = with_container(
        demo_spec(),
        user="root",
        privileged=True,
        host_pid=True,
        host_ipc=True,
        cap_add=("NET_BIND_SERVICE", "SYS_ADMIN"),
        resources=demo_spec().container.resources.model_copy(update={"memory_bytes": None}),
    )
    denied = evaluate(
        load_policies((SHIPPED,)), document(bad), DATA | {"allowed_registries": ["reg.internal"]}
    )
    assert denied == sorted(
        [
            'web adds capability SYS_ADMIN, which is not allowed (allowed: ["NET_BIND_SERVICE"])',
            "web has no memory limit: set container.resources.memory_bytes",
            "web is privileged: remove container.privileged",
            "web runs as root (user root): set container.user, or USER in the image, "
            "to a non-root user",
            "web shares the host's IPC namespace (container.host_ipc)",
            "web shares the host's PID namespace (container.host_pid)",
            "web: image 127.0.0.1:5000/demo/web:1.0.0 comes from registry 127.0.0.1:5000, "
            'which is not allowed (allowed: ["reg.internal"])',
        ]
    )


@pytest.mark.parametrize(
    ("spec_user", "image_user", "root"),
    [
        (None, "", True),  # neither says: the engine runs it as root
        (None, "0:0", True),
        (None, "65534", False),
        ("0", "65534", True),  # the spec overrides the image
        ("1000:1000", "", False),
        ("root:staff", "65534", True),
    ],
)
def test_the_user_is_the_specs_if_set_else_the_images(
    spec_user: str | None, image_user: str, root: bool
) -> None:
    spec = with_container(demo_spec(), user=spec_user)
    denied = evaluate(load_policies((SHIPPED,)), document(spec, image_user), DATA)
    assert any("runs as root" in message for message in denied) is root


def test_operators_add_their_own_policies_and_every_message_is_kept_verbatim(
    tmp_path: Path,
) -> None:
    (tmp_path / "team.rego").write_text(
        "package fleet.policy\n"
        "import rego.v1\n"
        'deny contains "no \\"latest\\" tags, ever" if {\n'
        '  endswith(input.image.reference, ":1.0.0")\n'
        "}\n"
    )
    denied = evaluate(load_policies((SHIPPED, tmp_path)), document(demo_spec()), DATA)
    assert denied == ['no "latest" tags, ever']


def test_a_policy_that_does_not_compile_is_an_error_naming_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken.rego").write_text("package fleet.policy\ndeny contains x if { x := }\n")
    with pytest.raises(PolicyError, match=r"broken\.rego"):
        evaluate(load_policies((tmp_path,)), document(demo_spec()), DATA)


def test_a_deny_that_is_not_a_string_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "numbers.rego").write_text(
        "package fleet.policy\nimport rego.v1\ndeny contains 42 if { true }\n"
    )
    with pytest.raises(PolicyError, match="42"):
        evaluate(load_policies((tmp_path,)), document(demo_spec()), DATA)


def test_a_missing_policy_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_policies((tmp_path / "nope",))


def test_policies_in_other_packages_deny_nothing(tmp_path: Path) -> None:
    (tmp_path / "other.rego").write_text("package elsewhere\nimport rego.v1\ndeny := {1}\n")
    assert evaluate(load_policies((tmp_path,)), document(demo_spec()), DATA) == []
