"""Image trust before a rollout: registry allowlist, digest pinning, scan gate, policies.

Run by ``fleetctl rollout start`` once, before any host is asked anything: the tag is
resolved to a digest here, and every host then pulls exactly that digest (an agent
refuses it if the tag has since moved). What passed, and a --skip-scan, is stored in the
rollout record, so ``rollout history`` shows how each revision was vetted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

from controller.errors import ControllerError
from controller.gates.policy import PolicyModule, evaluate
from controller.gates.scan import Scanner, Severity, blocking_reason
from controller.rollouts.model import ScanVerdict, Vetting
from fleet_registry.client import RegistryAccess, RegistryClient
from protocol.app import AppSpec
from protocol.image_ref import ImageReference, parse_image_reference, registry_refusal
from protocol.models import Reason
from protocol.spec import ServiceSpec

log = logging.getLogger("fleetctl")


class ImageRefused(ControllerError):
    """The image or its spec failed a trust check; ``reasons`` has one entry per finding."""

    code = "image_refused"

    def __init__(self, reasons: list[Reason]) -> None:
        lines = [f"{r.code}: {r.text}" for r in reasons]
        super().__init__("the rollout is refused:\n  " + "\n  ".join(lines))
        self.reasons = reasons


@dataclass(frozen=True)
class Vetter:
    access: RegistryAccess
    allowed_registries: tuple[str, ...] = ()
    pin_digests: bool = True
    scanner: Scanner | None = None
    scan_threshold: Severity = "HIGH"
    policies: tuple[PolicyModule, ...] = ()
    allowed_capabilities: tuple[str, ...] = ()

    async def vet(self, target: ServiceSpec, *, skip_scan: bool) -> tuple[ServiceSpec, Vetting]:
        """The target with its image pinned, and what was checked; ImageRefused if bad."""
        ref = parse_image_reference(target.image)
        refusal = registry_refusal(ref, self.allowed_registries)
        if refusal is not None:
            raise ImageRefused([Reason(code="registry_not_allowed", text=refusal)])
        async with AsyncExitStack() as registry:
            # One registry conversation (one connection) for the pin and the policies' read
            # of the image config, closed when vetting ends, refused or not.
            client: RegistryClient | None = None
            if self.pin_digests or self.policies:
                client = await registry.enter_async_context(self.access.client(ref))
            if self.pin_digests:
                assert client is not None
                ref = await self._pin(client, ref)
            pinned = target.model_copy(update={"image": str(ref)})
            scan, findings = await self._scan(str(ref), ref, skip_scan)
            policies = await self._check_policies(client, pinned, ref)
        vetting = Vetting(
            requested=target.image,
            digest=ref.digest,
            scan=scan,
            scan_findings=findings,
            policies=policies,
        )
        return pinned, vetting

    async def vet_app(self, app: AppSpec, *, skip_scan: bool) -> tuple[AppSpec, dict[str, Vetting]]:
        """Each member vetted as a service's image would be: the app with every member's
        image pinned, and each member's checks (by member name). One refusal refuses it
        all, naming the member."""
        members, vettings = [], {}
        for member in app.members:
            try:
                spec, vettings[member.name] = await self.vet(member.spec, skip_scan=skip_scan)
            except ImageRefused as exc:
                raise ImageRefused(
                    [r.model_copy(update={"text": f"{member.name}: {r.text}"}) for r in exc.reasons]
                ) from None
            members.append(member.model_copy(update={"spec": spec}))
        return app.model_copy(update={"members": tuple(members)}), vettings

    async def _pin(self, client: RegistryClient, ref: ImageReference) -> ImageReference:
        digest, _ = await client.resolve(ref.digest or ref.tag or "latest")
        if ref.digest and digest != ref.digest:
            raise ImageRefused([Reason(code="digest_mismatch", text=f"{ref} resolves to {digest}")])
        return ref.pinned(digest)

    async def _scan(
        self, image: str, ref: ImageReference, skip_scan: bool
    ) -> tuple[ScanVerdict, int]:
        if skip_scan:
            log.warning("scan of %s skipped by --skip-scan; recorded in the rollout", image)
            return "skipped", 0
        if self.scanner is None:
            return "off", 0
        report = await self.scanner.scan(image, self._scanner_login(ref))
        blocking = report.at_or_above(self.scan_threshold)
        if blocking:
            raise ImageRefused(
                [
                    Reason(
                        code="scan_findings",
                        text=blocking_reason(image, blocking, self.scan_threshold),
                    )
                ]
            )
        return "passed", len(report.findings)

    def _scanner_login(self, ref: ImageReference) -> Mapping[str, str]:
        """Trivy reads a registry login from its environment (never from argv, never logged)."""
        credential = self.access.credentials.get(ref.registry_or_default)
        if credential is None:
            return {}
        return {
            "TRIVY_USERNAME": credential.username,
            "TRIVY_PASSWORD": credential.password.get_secret_value(),
        }

    async def _check_policies(
        self, client: RegistryClient | None, spec: ServiceSpec, ref: ImageReference
    ) -> tuple[str, ...]:
        if not self.policies:
            return ()
        assert client is not None
        image_config = await client.image_config(ref.digest or ref.tag or "latest")
        document = {
            "spec": spec.model_dump(mode="json"),
            "image": {
                "reference": str(ref),
                "registry": ref.registry_or_default,
                "repository": ref.repository,
                "tag": ref.tag,
                "digest": ref.digest,
                "config": image_config.get("config") or {},
            },
        }
        data = {
            "allowed_registries": list(self.allowed_registries),
            "allowed_capabilities": list(self.allowed_capabilities),
        }
        denied = evaluate(self.policies, document, data)
        if denied:
            raise ImageRefused([Reason(code="policy_denied", text=message) for message in denied])
        return tuple(module.name for module in self.policies)
