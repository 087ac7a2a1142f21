"""Can this host pull the image? Reach, TLS, credentials and the tag, told apart.

Each failure becomes one Reason with its own code, because an operator fixes a firewall,
a certificate, a password and a typo in different places:
``registry_unreachable``, ``registry_tls``, ``registry_auth``, ``image_not_found``.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message

from node_agent.settings import RegistryCredential
from protocol.image_ref import ImageReference
from protocol.models import Reason

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


@dataclass
class RegistryCheck:
    reasons: list[Reason] = field(default_factory=list)
    digest: str | None = None
    size: int = 0
    """Compressed size of the image's layers, for the disk check."""


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Message
    body: bytes


class _Failure(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.text)
        self.reason = reason


def is_loopback_registry(registry: str) -> bool:
    host = urllib.parse.urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def check_registry(
    ref: ImageReference,
    credential: RegistryCredential | None,
    *,
    insecure: bool,
    timeout: float,
    loopback_insecure: bool = True,
) -> RegistryCheck:
    registry = ref.registry_or_default
    plain_http = insecure or (loopback_insecure and is_loopback_registry(registry))
    client = _RegistryClient(registry, plain_http, credential, ref.repository, timeout)
    result = RegistryCheck()
    try:
        await client.check_reachable()
        await client.authenticate()
        result.digest, result.size = await client.resolve(ref.digest or ref.tag or "latest")
    except _Failure as failure:
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


class _RegistryClient:
    def __init__(
        self,
        registry: str,
        plain_http: bool,
        credential: RegistryCredential | None,
        repository: str,
        timeout: float,
    ) -> None:
        self.registry = registry
        self.base = f"{'http' if plain_http else 'https'}://{registry}"
        self.credential = credential
        self.repository = repository
        self.timeout = timeout
        self.authorization: str | None = None

    async def check_reachable(self) -> None:
        parts = urllib.parse.urlsplit(self.base)
        host = parts.hostname or ""
        port = parts.port or (80 if parts.scheme == "http" else 443)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise _Failure(
                Reason(
                    code="registry_unreachable",
                    text=f"cannot connect to registry {self.registry}: {exc or 'timed out'}",
                )
            ) from exc
        writer.close()
        await writer.wait_closed()

    async def authenticate(self) -> None:
        response = await self._get("/v2/")
        if response.status == 200:
            return
        if response.status != 401:
            raise _Failure(
                Reason(
                    code="registry_error",
                    text=f"registry {self.registry} answered /v2/ with {response.status}",
                )
            )
        if self.credential is None:
            raise _Failure(
                Reason(
                    code="registry_auth",
                    text=f"registry {self.registry} requires credentials and none are configured",
                )
            )
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            self.authorization = await self._bearer_token(challenge)
        else:
            pair = f"{self.credential.username}:{self.credential.password.get_secret_value()}"
            self.authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        if (await self._get("/v2/")).status == 401:
            raise _Failure(
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
        pair = f"{self.credential.username}:{self.credential.password.get_secret_value()}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode()
        response = await self._fetch(f"{params.get('realm', '')}?{query}", "GET", basic, None)
        if response.status != 200:
            raise _Failure(
                Reason(
                    code="registry_auth",
                    text=f"token service of {self.registry} refused the credentials",
                )
            )
        body = json.loads(response.body)
        return "Bearer " + str(body.get("token") or body.get("access_token"))

    async def resolve(self, reference: str) -> tuple[str, int]:
        response = await self._get(
            f"/v2/{self.repository}/manifests/{reference}", accept=MANIFEST_TYPES
        )
        if response.status == 404:
            raise _Failure(
                Reason(
                    code="image_not_found",
                    text=f"{self.registry}/{self.repository}:{reference} does not exist",
                )
            )
        if response.status != 200:
            raise _Failure(
                Reason(
                    code="registry_error",
                    text=f"manifest of {self.repository}:{reference} answered {response.status}",
                )
            )
        digest = response.headers.get("Docker-Content-Digest") or ""
        manifest = json.loads(response.body)
        if manifest.get("mediaType") in _INDEX_TYPES:
            chosen = next(
                (
                    item
                    for item in manifest.get("manifests", ())
                    if item.get("platform", {}).get("os") == "linux"
                    and item.get("platform", {}).get("architecture") == "amd64"
                ),
                None,
            )
            if chosen is None:
                return digest, 0
            inner = await self._get(
                f"/v2/{self.repository}/manifests/{chosen['digest']}", accept=MANIFEST_TYPES
            )
            manifest = json.loads(inner.body)
        size = sum(int(layer.get("size", 0)) for layer in manifest.get("layers", ()))
        return digest, size

    async def _get(self, path: str, accept: str | None = None) -> _Response:
        return await self._fetch(self.base + path, "GET", self.authorization, accept)

    async def _fetch(
        self, url: str, method: str, authorization: str | None, accept: str | None
    ) -> _Response:
        request = urllib.request.Request(url, method=method)
        if authorization:
            request.add_header("Authorization", authorization)
        if accept:
            request.add_header("Accept", accept)

        def send() -> _Response:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return _Response(response.status, response.headers, response.read())
            except urllib.error.HTTPError as exc:
                return _Response(exc.code, exc.headers, exc.read())

        try:
            return await asyncio.wait_for(asyncio.to_thread(send), self.timeout + 1)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise _Failure(
                    Reason(
                        code="registry_tls",
                        text=f"TLS with registry {self.registry} failed: {exc.reason}",
                    )
                ) from exc
            raise _Failure(
                Reason(
                    code="registry_unreachable",
                    text=f"registry {self.registry}: {exc.reason}",
                )
            ) from exc
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            code = "registry_tls" if isinstance(exc, ssl.SSLError) else "registry_unreachable"
            raise _Failure(
                Reason(code=code, text=f"registry {self.registry}: {exc or 'timed out'}")
            ) from exc
