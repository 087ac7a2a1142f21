"""The bus's PKI: a CA, the server certificate, and one client certificate per party.

``fleetctl pki init`` makes the CA and the NATS server's certificate (and the
controller's client certificate); ``fleetctl hosts enroll HOST`` issues a host's; ``hosts
revoke HOST`` takes it off the server's user list. nats-server runs with
``verify_and_map``: the client certificate is the credential, its subject is the user
name, and ``users.conf`` (generated here, included by the configs in deploy/nats/) gives
each user its permissions (protocol.bus_permissions). A certificate whose subject is not
in users.conf is refused, so revoking is removing the user and reloading the server.

Private keys are written with mode 0600 and never printed.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol import subjects
from protocol.bus_permissions import (
    controller_permissions,
    host_permissions,
    reader_permissions,
)
from protocol.errors import ConfigurationError

Role = Literal["host", "controller", "reader"]
ORGANISATION = "fleetwave"
CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Issued:
    name: str
    role: Role
    cert: Path
    key: Path
    user: str
    """The NATS user name the server maps this certificate to (its subject DN)."""
    serial: int


def subject_dn(name: str, role: Role) -> str:
    """The subject as nats-server prints it for verify_and_map (RFC 4514, CN first)."""
    return f"CN={name},OU={role},O={ORGANISATION}"


class Pki:
    """A PKI directory: ca.{crt,key}, server.{crt,key}, clients/NAME.{crt,key}, users.conf."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def users_conf(self) -> Path:
        return self.dir / "users.conf"

    @property
    def _registry(self) -> Path:
        return self.dir / "enrolled.json"

    def client_paths(self, name: str) -> tuple[Path, Path]:
        return self.dir / "clients" / f"{name}.crt", self.dir / "clients" / f"{name}.key"

    # ---- init ----

    def init(self, server_names: tuple[str, ...], controller: str = "controller") -> Issued:
        """A new CA, the server certificate for ``server_names``, and the controller's."""
        if self.ca_cert.exists():
            raise ConfigurationError(f"{self.dir} already holds a CA; refusing to replace it")
        self.dir.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                x509.NameAttribute(NameOID.COMMON_NAME, "fleetwave bus CA"),
            ]
        )
        now = _now()
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.dir / "ca.key", ca_key)
        self.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self._issue(
            self.dir / "server.crt",
            self.dir / "server.key",
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_names[0])]),
            server_names,
            # Server and client auth: cluster routes present this certificate to peers.
            (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        self._save_registry({})
        return self.enroll(controller, "controller")

    # ---- parties ----

    def enroll(self, name: str, role: Role) -> Issued:
        """Issue ``name``'s client certificate and add it to users.conf."""
        subjects.validate_token(name, "name")
        registry = self._load_registry()
        if name in registry:
            raise ConfigurationError(f"{name} is already enrolled (revoke it first)")
        cert_path, key_path = self.client_paths(name)
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        serial = self._issue(
            cert_path,
            key_path,
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            ),
            (),
            (ExtendedKeyUsageOID.CLIENT_AUTH,),
        )
        registry[name] = {"role": role, "serial": str(serial), "enrolled_at": _now().isoformat()}
        self._save_registry(registry)
        return Issued(name, role, cert_path, key_path, subject_dn(name, role), serial)

    def revoke(self, name: str) -> dict[str, Any]:
        """Take ``name`` off users.conf and delete its key; the server refuses it on reload."""
        registry = self._load_registry()
        entry = registry.pop(name, None)
        if entry is None:
            raise ConfigurationError(f"{name} is not enrolled")
        revoked = self._load_revoked()
        revoked[name] = entry | {"revoked_at": _now().isoformat()}
        (self.dir / "revoked.json").write_text(json.dumps(revoked, indent=2))
        self._save_registry(registry)
        for path in self.client_paths(name):
            path.unlink(missing_ok=True)
        return dict(revoked[name])

    def enrolled(self) -> dict[str, dict[str, str]]:
        return self._load_registry()

    @staticmethod
    def permissions(name: str, role: Role) -> dict[str, Any]:
        if role == "host":
            return host_permissions(name)
        if role == "controller":
            return controller_permissions(name)
        return reader_permissions(name)

    def permission_block(self, name: str, role: Role) -> str:
        """The users.conf entry of one party, as nats-server config (JSON is valid there)."""
        user = {"user": subject_dn(name, role), "permissions": self.permissions(name, role)}
        return json.dumps(user, indent=2)

    # ---- files ----

    def _issue(
        self,
        cert_path: Path,
        key_path: Path,
        subject: x509.Name,
        alt_names: tuple[str, ...],
        usages: tuple[x509.ObjectIdentifier, ...],
    ) -> int:
        ca_key = self._ca_key()
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in alt_names]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return serial

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), None)
        except OSError as exc:
            raise ConfigurationError(
                f"no CA in {self.dir}: run `fleetctl pki init` first ({exc.strerror})"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigurationError(f"{self.dir / 'ca.key'} is not an EC key")
        return key

    def _load_registry(self) -> dict[str, dict[str, str]]:
        try:
            loaded: dict[str, dict[str, str]] = json.loads(self._registry.read_text())
        except OSError as exc:
            raise ConfigurationError(
                f"no PKI in {self.dir}: run `fleetctl pki init` first ({exc.strerror})"
            ) from exc
        return loaded

    def _load_revoked(self) -> dict[str, dict[str, str]]:
        path = self.dir / "revoked.json"
        loaded: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
        return loaded

    def _save_registry(self, registry: dict[str, dict[str, str]]) -> None:
        self._registry.write_text(json.dumps(registry, indent=2, sort_keys=True))
        users = [
            {
                "user": subject_dn(name, _role(entry)),
                "permissions": self.permissions(name, _role(entry)),
            }
            for name, entry in sorted(registry.items())
        ]
        # Written whole and renamed: the server may be reloading it right now.
        text = "# Generated by fleetctl (pki init, hosts enroll, hosts revoke): do not edit.\n"
        text += "authorization: " + json.dumps({"users": users}, indent=2) + "\n"
        temporary = self.users_conf.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.users_conf)


def _role(entry: dict[str, str]) -> Role:
    role = entry.get("role")
    if role not in ("host", "controller", "reader"):
        raise ConfigurationError(f"enrolled.json names an unknown role {role!r}")
    return role  # type: ignore[return-value]


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
