"""Talk to an image registry: reach, TLS, credentials, tags, digests and image configs.

Each failure carries one Reason with its own code, because an operator fixes a firewall,
a certificate, a password and a typo in different places:
``registry_unreachable``, ``registry_tls``, ``registry_auth``, ``image_not_found``,
``registry_error``; and ``digest_mismatch`` when a pinned tag has moved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from fleet_registry.credentials import RegistryCredential
from fleet_registry.transport import MAX_DOCUMENT, RegistryFailure, Response, fetch, open_http
from protocol.image_ref import ImageReference
from protocol.models import Reason
from protocol.transport import is_loopback_host

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
_INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
__all__ = [
    "MANIFEST_TYPES",
    "MAX_DOCUMENT",
    "RegistryAccess",
    "RegistryCheck",
    "RegistryClient",
    "RegistryFailure",
    "check_registry",
    "is_loopback_registry",
]


@dataclass
class RegistryCheck:
    reasons: list[Reason] = field(default_factory=list)
    digest: str | None = None
    size: int = 0
    """Compressed size of the image's layers, for the disk check."""


def is_loopback_registry(registry: str) -> bool:
    return is_loopback_host(urllib.parse.urlsplit(f"//{registry}").hostname or "")


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach registries: credentials by registry, and which speak plain HTTP."""

    credentials: dict[str, RegistryCredential] = field(default_factory=dict)
    insecure: tuple[str, ...] = ()
    loopback_insecure: bool = True
    timeout: float = 10.0

    @asynccontextmanager
    async def client(self, ref: ImageReference) -> AsyncIterator[RegistryClient]:
        """A client for ``ref``'s repository, reached and logged in, for one conversation:
        its requests share a connection, which is closed when the ``async with`` ends."""
        registry = ref.registry_or_default
        plain_http = registry in self.insecure or (
            self.loopback_insecure and is_loopback_registry(registry)
        )
        async with open_http(self.timeout) as http:
            client = RegistryClient(
                http,
                registry,
                plain_http,
                self.credentials.get(registry),
                ref.repository,
                self.timeout,
            )
            await client.authenticate()
            yield client


async def check_registry(ref: ImageReference, access: RegistryAccess) -> RegistryCheck:
    """Can this host pull ``ref``? A pinned digest must exist, and its tag still name it."""
    result = RegistryCheck()
    try:
        async with access.client(ref) as client:
            if ref.digest and ref.tag:
                return await _check_pinned_tag(client, ref, ref.tag, ref.digest)
            result.digest, result.size = await client.resolve(ref.digest or ref.tag or "latest")
    except RegistryFailure as failure:
        result.reasons.append(failure.reason)
        return result
    if ref.digest and result.digest != ref.digest:
        result.reasons.append(
            Reason(
                code="digest_mismatch",
                text=f"{ref} resolves to {result.digest}, not the pinned {ref.digest}",
            )
        )
    return result


async def _check_pinned_tag(
    client: RegistryClient, ref: ImageReference, tag: str, digest: str
) -> RegistryCheck:
    """The tag is asked, not the digest: while it still names the pinned digest, that one
    answer proves the digest exists and gives its size. A tag that moved after the
    controller pinned it means someone pushed over a vetted release; pulling by digest
    would still get the vetted bytes, but an operator must hear of it before anything
    changes."""
    named, size = await client.resolve(tag)
    if named == digest:
        return RegistryCheck(digest=digest, size=size)
    moved = Reason(
        code="digest_mismatch",
        text=f"tag {ref.name}:{tag} moved to {named} after it was pinned to {digest}",
    )
    return RegistryCheck(reasons=[moved], digest=digest)


class RegistryClient:
    """Requests to one repository of one registry, over ``http`` (which its owner closes)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        registry: str,
        plain_http: bool,
        credential: RegistryCredential | None,
        repository: str,
        timeout: float,
    ) -> None:
        self.http = http
        self.registry = registry
        self.base = f"{'http' if plain_http else 'https'}://{registry}"
        self.credential = credential
        self.repository = repository
        self.timeout = timeout
        self.authorization: str | None = None

    async def authenticate(self) -> None:
        response = await self._get("/v2/")
        if response.status == 200:
            return
        if response.status != 401:
            raise RegistryFailure(
                Reason(
                    code="registry_error",
                    text=f"registry {self.registry} answered /v2/ with {response.status}",
                )
            )
        if self.credential is None:
            raise RegistryFailure(
                Reason(
                    code="registry_auth",
                    text=f"registry {self.registry} requires credentials and none are configured",
                )
            )
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            self.authorization = await self._bearer_token(challenge)
        else:
            self.authorization = self._basic()
        if (await self._get("/v2/")).status == 401:
            raise RegistryFailure(
                Reason(
                    code="registry_auth",
                    text=f"registry {self.registry} rejected the credentials of "
                    f"{self.credential.username!r}",
                )
            )

    async def _bearer_token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode(
            {"service": params.get("service", ""), "scope": f"repository:{self.repository}:pull"}
        )
        assert self.credential is not None
        basic = self._basic()
        response = await self._fetch(f"{params.get('realm', '')}?{query}", basic, None)
        if response.status != 200:
            raise RegistryFailure(
                Reason(
                    code="registry_auth",
                    text=f"token service of {self.registry} refused the credentials",
                )
            )
        body = _json_object(response.body, f"token of {self.registry}")
        return "Bearer " + str(body.get("token") or body.get("access_token"))

    def _basic(self) -> str:
        assert self.credential is not None
        return "Basic " + base64.b64encode(self.credential.basic_pair().encode()).decode()

    async def image_config(self, reference: str) -> dict[str, Any]:
        """The image's config blob (``config.User``, ``config.ExposedPorts``...)."""
        manifest = await self._manifest(reference)
        config = manifest.get("config")
        digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(digest, str):
            raise RegistryFailure(
                Reason(code="registry_error", text=f"{reference} has no image config")
            )
        response = await self._get(f"/v2/{self.repository}/blobs/{digest}")
        if response.status != 200:
            raise RegistryFailure(
                Reason(
                    code="registry_error",
                    text=f"image config {digest} of {self.repository} answered {response.status}",
                )
            )
        return _json_object(response.body, f"image config {digest}")

    async def _manifest(self, reference: str) -> dict[str, Any]:
        """The image manifest for linux/amd64, through an index if the reference is one."""
        manifest = await self._platform_manifest(
            await self._manifest_response(reference), reference
        )
        if manifest is None:
            raise RegistryFailure(
                Reason(code="image_not_found", text=f"{reference} has no linux/amd64 image")
            )
        return manifest

    async def _platform_manifest(self, response: Response, reference: str) -> dict[str, Any] | None:
        """The manifest ``response`` holds or, for an index, its linux/amd64 entry's
        (None if the index has none)."""
        manifest = _json_object(response.body, f"manifest of {reference}")
        if manifest.get("mediaType") not in _INDEX_TYPES:
            return manifest
        chosen = _linux_amd64(manifest)
        if chosen is None:
            return None
        inner = await self._manifest_response(chosen)
        return _json_object(inner.body, f"manifest {chosen}")

    async def _manifest_response(self, reference: str) -> Response:
        response = await self._get(
            f"/v2/{self.repository}/manifests/{reference}", accept=MANIFEST_TYPES
        )
        if response.status == 404:
            raise RegistryFailure(
                Reason(
                    code="image_not_found",
                    text=f"{self.registry}/{self.repository}:{reference} does not exist",
                )
            )
        if response.status != 200:
            raise RegistryFailure(
                Reason(
                    code="registry_error",
                    text=f"manifest of {self.repository}:{reference} answered {response.status}",
                )
            )
        return response

    async def resolve(self, reference: str) -> tuple[str, int]:
        """The digest ``reference`` names now, and its linux/amd64 layers' size."""
        response = await self._manifest_response(reference)
        # The digest is of the manifest's exact bytes; a registry may leave out the header.
        digest = response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.body).hexdigest()
        )
        manifest = await self._platform_manifest(response, reference)
        if manifest is None:
            return digest, 0
        layers = manifest.get("layers")
        size = sum(
            int(layer.get("size", 0))
            for layer in (layers if isinstance(layers, list) else ())
            if isinstance(layer, dict)
        )
        return digest, size

    async def _get(self, path: str, accept: str | None = None) -> Response:
        return await self._fetch(self.base + path, self.authorization, accept)

    async def _fetch(self, url: str, authorization: str | None, accept: str | None) -> Response:
        # A plain request header: httpx keeps it through a redirect within the registry and
        # drops it on one to another origin (object storage). A request event hook that
        # set it would put it back on every hop.
        headers = {}
        if authorization:
            headers["Authorization"] = authorization
        if accept:
            headers["Accept"] = accept
        return await fetch(self.http, self.registry, url, headers=headers, timeout=self.timeout)


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise RegistryFailure(Reason(code="registry_error", text=f"{what} is not JSON")) from exc
    if not isinstance(parsed, dict):
        raise RegistryFailure(Reason(code="registry_error", text=f"{what} is not a JSON object"))
    return parsed


def _linux_amd64(index: dict[str, Any]) -> str | None:
    """The digest of an index's linux/amd64 manifest (the only platform hosts run)."""
    for item in index.get("manifests") or ():
        platform = item.get("platform") or {} if isinstance(item, dict) else {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            digest = item.get("digest")
            return digest if isinstance(digest, str) else None
    return None
