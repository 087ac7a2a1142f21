"""The registry client against a registry front and a blob store on loopback ports.

The promise under test first: a blob the registry redirects to another origin (object
storage) is fetched there without the registry's Authorization header, while a redirect
within the registry keeps it, since the registry asks for it again there. The rest is
the client's conversation: one connection for one check, closed after; an index walked
to its linux/amd64 image; bearer logins; and registries that stall, loop or send too
much, which each end as a typed failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import time
from typing import Literal

import pytest

from fleet_registry.client import RegistryAccess, RegistryFailure, check_registry
from fleet_registry.credentials import RegistryCredential
from protocol.image_ref import ImageReference, parse_image_reference
from tests.support.registry_front import (
    BASIC,
    BEARER,
    PASSWORD,
    STORE_PREFIX,
    TOKEN,
    USER,
    BlobStore,
    RegistryFront,
    serving,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG = {"os": "linux", "architecture": "amd64", "config": {"User": "app:app"}}
CONFIG_BYTES = json.dumps(CONFIG).encode()
LAYER_SIZES = (1000, 234)
MANIFEST_BYTES = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"digest": sha256(CONFIG_BYTES), "size": len(CONFIG_BYTES)},
        "layers": [
            {"digest": sha256(bytes([n])), "size": size} for n, size in enumerate(LAYER_SIZES)
        ],
    }
).encode()
INDEX_BYTES = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"digest": sha256(b"arm"), "platform": {"os": "linux", "architecture": "arm64"}},
            {
                "digest": sha256(MANIFEST_BYTES),
                "platform": {"os": "linux", "architecture": "amd64"},
            },
        ],
    }
).encode()
MANIFESTS = {
    "1.0": (OCI_MANIFEST, MANIFEST_BYTES),
    sha256(MANIFEST_BYTES): (OCI_MANIFEST, MANIFEST_BYTES),
    "multi": (OCI_INDEX, INDEX_BYTES),
}
BLOBS = {sha256(CONFIG_BYTES): CONFIG_BYTES}


def access(front: RegistryFront, password: str = PASSWORD) -> RegistryAccess:
    login = RegistryCredential(username=USER, password=password)
    return RegistryAccess(credentials={front.address: login}, timeout=5.0)


def image(front: RegistryFront, tag: str) -> ImageReference:
    return parse_image_reference(f"{front.address}/demo/web:{tag}")


@pytest.mark.parametrize("auth", ["basic", "bearer"])
async def test_a_config_blob_redirected_to_another_origin_is_fetched_there_without_credentials(
    auth: Literal["basic", "bearer"],
) -> None:
    with (
        serving(BlobStore(BLOBS)) as store,
        serving(RegistryFront(MANIFESTS, {}, auth, blob_target=f"{store.origin}/blobs/")) as front,
    ):
        async with access(front).client(image(front, "1.0")) as client:
            config = await client.image_config("1.0")

    assert config == CONFIG
    # The registry was asked with its credentials, and sent the client on to the store.
    asked = [seen for seen in front.seen if "/blobs/" in seen.path]
    assert [seen.headers.get("authorization") for seen in asked] == [
        BASIC if auth == "basic" else BEARER
    ]
    assert [seen.path for seen in store.seen] == [f"/blobs/{sha256(CONFIG_BYTES)}"]
    assert "authorization" not in store.seen[0].headers
    secrets = (PASSWORD, TOKEN, BASIC.split()[1])
    assert not [v for v in store.seen[0].headers.values() if any(s in v for s in secrets)]


async def test_a_blob_redirected_within_the_registry_is_fetched_there_with_credentials() -> None:
    # A registry behind a proxy that moves blob paths: the same origin asks for the same
    # login again, so the header has to follow (httpx keeps it when the origin is equal).
    with serving(RegistryFront(MANIFESTS, BLOBS, "bearer", blob_target=STORE_PREFIX)) as front:
        async with access(front).client(image(front, "1.0")) as client:
            config = await client.image_config("1.0")

    assert config == CONFIG
    stored = [seen for seen in front.seen if seen.path.startswith(STORE_PREFIX)]
    assert [seen.headers.get("authorization") for seen in stored] == [BEARER]


async def test_one_registry_check_talks_over_one_connection_and_closes_it_when_done() -> None:
    with serving(RegistryFront(MANIFESTS, BLOBS, "bearer")) as front:
        check = await check_registry(image(front, "1.0"), access(front))

        assert (check.reasons, check.digest, check.size) == ([], sha256(MANIFEST_BYTES), 1234)
        assert [seen.path.partition("?")[0] for seen in front.seen] == [
            "/v2/",  # challenged
            "/token",
            "/v2/",  # the token accepted
            "/v2/demo/web/manifests/1.0",
        ]
        ports = {seen.client_port for seen in front.seen}
        assert len(ports) == 1
        closed = await asyncio.to_thread(front.wait_closed, ports, 5.0)
        assert closed, "the client left its connection open"


async def test_a_tag_naming_an_index_resolves_to_the_index_and_reads_the_amd64_image() -> None:
    with serving(RegistryFront(MANIFESTS, BLOBS, "basic")) as front:
        async with access(front).client(image(front, "multi")) as client:
            digest, size = await client.resolve("multi")
            config = await client.image_config("multi")

    # This front sends no Docker-Content-Digest, so the digest is of the bytes it sent.
    assert (digest, size) == (sha256(INDEX_BYTES), sum(LAYER_SIZES))
    assert config == CONFIG


async def test_a_password_the_token_service_refuses_is_a_registry_auth_failure() -> None:
    with serving(RegistryFront(MANIFESTS, BLOBS, "bearer")) as front:
        check = await check_registry(image(front, "1.0"), access(front, password="wrong"))

    assert [reason.code for reason in check.reasons] == ["registry_auth"]
    assert "refused the credentials" in check.reasons[0].text


async def test_a_registry_that_accepts_but_never_answers_is_unreachable_after_the_timeout() -> None:
    # The kernel completes the handshake from the backlog; nothing ever reads the request.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        ref = parse_image_reference(f"127.0.0.1:{silent.getsockname()[1]}/demo/web:1.0")
        started = time.monotonic()
        check = await check_registry(ref, RegistryAccess(timeout=0.5))
        waited = time.monotonic() - started

    assert [reason.code for reason in check.reasons] == ["registry_unreachable"]
    assert 0.5 <= waited < 3.0


async def test_a_blob_redirect_that_loops_is_a_registry_error() -> None:
    looping = "/v2/demo/web/blobs/"
    with serving(RegistryFront(MANIFESTS, BLOBS, "basic", blob_target=looping)) as front:
        async with access(front).client(image(front, "1.0")) as client:
            with pytest.raises(RegistryFailure) as failed:
                await client.image_config("1.0")

    assert failed.value.code == "registry_error"
    assert "redirect" in failed.value.reason.text.lower()


async def test_a_manifest_over_four_megabytes_is_refused_not_read_whole() -> None:
    huge = json.dumps({"schemaVersion": 2, "pad": "x" * (4 * 1024 * 1024)}).encode()
    with serving(RegistryFront({"huge": (OCI_MANIFEST, huge)}, {}, "basic")) as front:
        check = await check_registry(image(front, "huge"), access(front))

    assert [reason.code for reason in check.reasons] == ["registry_error"]
    assert f"more than {4 * 1024 * 1024} bytes" in check.reasons[0].text


def test_importing_the_registry_client_leaves_out_httpxs_command_line_tool() -> None:
    # About 5 MB of the agent's memory (click, rich and pygments) for a CLI never run.
    probe = (
        "import sys, fleet_registry.client; "
        "print('httpx' in sys.modules, sorted({'click', 'rich', 'pygments'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.split() == ["True", "[]"]
