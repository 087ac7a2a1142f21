"""What the registry says a tag points at: the oracle for pinned digests."""

from __future__ import annotations

from fleet_registry.client import RegistryAccess
from protocol.image_ref import parse_image_reference


async def registry_digest(image: str) -> str:
    ref = parse_image_reference(image)
    async with RegistryAccess().client(ref) as client:
        digest, _ = await client.resolve(ref.tag or "latest")
    return digest
