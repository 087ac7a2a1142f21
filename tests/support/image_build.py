"""Images the tests build on the shared engine.

Every build here skips the engine's build cache: the classic builder looks for a cached
step among the images made from the same base, and when another test removes one of
those at that moment the build fails ("unable to find image sha256:..."; CI saw it with
two workers). Without the cache no build looks at another's images.
"""

from __future__ import annotations

import io

import docker

BUILD_TIMEOUT = 120


def build_image(
    client: docker.DockerClient, dockerfile: str, tag: str, *, network_mode: str | None = None
) -> None:
    """``dockerfile`` (no context of its own) built and tagged ``tag``."""
    client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=tag,
        rm=True,
        nocache=True,
        network_mode=network_mode,
        timeout=BUILD_TIMEOUT,
    )


def build_image_from_context(client: docker.DockerClient, context: bytes, tag: str) -> None:
    """A tar ``context`` holding its Dockerfile, built and tagged ``tag``."""
    client.images.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        tag=tag,
        rm=True,
        nocache=True,
        timeout=BUILD_TIMEOUT,
    )
