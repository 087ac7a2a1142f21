"""`fleetctl hosts enroll --bundle` and `fleet-agent install --mode systemd`: one file with
everything a new host needs, its key kept secret all the way (files only, no engine)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.fleet import fleetctl_executable

BUNDLE_MEMBERS = {"ca.crt": 0o644, "host.crt": 0o644, "host.key": 0o600, "agent.toml": 0o644}
"""What the README says a bundle holds, with each file's mode."""


BUS_SETTINGS = ("FLEET_NATS_URLS", "FLEET_NATS_URL", "FLEET_SIGNING_KEY_FILE")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command with only the FLEET_* bus settings ``env`` gives (none inherited)."""
    inherited = {k: v for k, v in os.environ.items() if k not in BUS_SETTINGS}
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**inherited, **(env or {})},
    )


def fleet_agent() -> str:
    return str(Path(sys.executable).parent / "fleet-agent")


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    assert run(fleetctl_executable(), "pki", "init", "--dir", str(directory)).returncode == 0
    return directory


def enrol(pki: Path, bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """web-1's bundle; unsigned unless ``extra`` gives a command key."""
    signed = "--command-key" in extra
    return run(
        fleetctl_executable(), "hosts", "enroll", "web-1", "--pki", str(pki),
        "--bundle", str(bundle), "--nats", "tls://10.1.2.3:4222",
        *extra, *(() if signed else ("--allow-unsigned",)),
    )  # fmt: skip


def members(bundle: Path) -> dict[str, tuple[int, bytes]]:
    with tarfile.open(bundle) as tar:
        found = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            found[member.name] = (stat.S_IMODE(member.mode), handle.read())
        return found


def test_a_bundle_holds_the_hosts_certificate_and_key_the_ca_and_its_settings(
    pki: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "web-1.tar"
    command_key = run(fleetctl_executable(), "keys", "generate", "--out", str(tmp_path / "k"))
    public = command_key.stdout.strip()
    done = enrol(pki, bundle, "--command-key", public, "--labels", "role=web,zone=a")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    found = members(bundle)
    assert {name: mode for name, (mode, _) in found.items()} == BUNDLE_MEMBERS
    key_text = found["host.key"][1].decode()
    assert "PRIVATE KEY" in key_text
    assert key_text.strip().splitlines()[1] not in done.stdout + done.stderr

    ca = x509.load_pem_x509_certificate(found["ca.crt"][1])
    cert = x509.load_pem_x509_certificate(found["host.crt"][1])
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "web-1"
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(found["host.key"][1], password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()

    settings = tomllib.loads(found["agent.toml"][1].decode())
    assert settings == {
        "host_id": "web-1",
        "nats_urls": ["tls://10.1.2.3:4222"],
        "nats_tls_ca": "/etc/fleetwave/ca.crt",
        "nats_tls_cert": "/etc/fleetwave/host.crt",
        "nats_tls_key": "/etc/fleetwave/host.key",
        "trusted_command_keys": [public],
        "labels": {"role": "web", "zone": "a"},
    }


def test_the_bundle_trusts_the_controllers_own_signing_key_by_default(
    pki: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "signing.key"
    public = run(fleetctl_executable(), "keys", "generate", "--out", str(key_file)).stdout.strip()
    bundle = tmp_path / "web-1.tar"
    done = run(
        fleetctl_executable(), "hosts", "enroll", "web-1", "--pki", str(pki),
        "--bundle", str(bundle), "--nats", "tls://10.1.2.3:4222",
        env={"FLEET_SIGNING_KEY_FILE": str(key_file)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    settings = tomllib.loads(members(bundle)["agent.toml"][1].decode())
    assert settings["trusted_command_keys"] == [public]
    assert key_file.read_text().strip() not in done.stdout + done.stderr


def test_a_bundle_is_never_written_over_and_a_reader_gets_none(pki: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "web-1.tar"
    bundle.write_text("someone's file")
    done = enrol(pki, bundle)
    assert done.returncode == 2
    assert done.stderr.strip() == f"fleetctl: {bundle} exists already; choose another --bundle"
    assert bundle.read_text() == "someone's file"
    reader = run(
        fleetctl_executable(), "hosts", "enroll", "dash", "--pki", str(pki),
        "--role", "reader", "--bundle", str(tmp_path / "dash.tar"),
    )  # fmt: skip
    assert reader.returncode == 2
    assert "--bundle is for hosts" in reader.stderr
    assert not (tmp_path / "dash.tar").exists()


def test_install_for_systemd_puts_the_files_in_place_with_the_key_kept_secret(
    pki: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "web-1.tar"
    assert enrol(pki, bundle).returncode == 0
    root = tmp_path / "root"
    done = run(
        fleet_agent(), "install", "--bundle", str(bundle), "--mode", "systemd",
        "--root", str(root), "--config-dir", "/etc/fleet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    placed = root / "etc" / "fleet"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in placed.iterdir()}
    assert modes == {"ca.crt": 0o644, "host.crt": 0o644, "host.key": 0o600, "agent.toml": 0o640}
    assert (placed / "host.key").read_bytes() == members(bundle)["host.key"][1]
    key_lines = (placed / "host.key").read_text().strip().splitlines()
    assert key_lines[1] not in done.stdout + done.stderr
    settings = tomllib.loads((placed / "agent.toml").read_text())
    assert settings["nats_tls_key"] == "/etc/fleet/host.key"
    assert settings["nats_tls_ca"] == "/etc/fleet/ca.crt"
    unit = (root / "etc" / "systemd" / "system" / "fleet-agent.service").read_text()
    assert f"ExecStart={fleet_agent()} run --config /etc/fleet/agent.toml\n" in unit


@pytest.mark.parametrize(
    ("leave_out", "says"),
    [
        (
            "--nats",
            "fleetctl: a bundle needs the bus URLs as the host reaches them: --nats "
            "(or FLEET_NATS_URLS)",
        ),
        (
            "--allow-unsigned",
            "fleetctl: a bundle needs the controller's command key (--command-key, or "
            "FLEET_SIGNING_KEY_FILE); --allow-unsigned for an agent that runs unsigned ones",
        ),
    ],
)
def test_a_bundle_without_bus_urls_or_command_key_is_refused_and_nobody_is_enrolled(
    pki: Path, tmp_path: Path, leave_out: str, says: str
) -> None:
    bundle = tmp_path / "web-1.tar"
    given = {"--nats": "tls://10.1.2.3:4222", "--allow-unsigned": None}
    del given[leave_out]
    args = [arg for flag, value in given.items() for arg in (flag, *([value] if value else []))]
    base = (fleetctl_executable(), "hosts", "enroll", "web-1", "--pki", str(pki))
    refused = run(*base, "--bundle", str(bundle), *args)
    assert (refused.returncode, refused.stderr.strip()) == (2, says)
    assert not bundle.exists()
    assert enrol(pki, bundle).returncode == 0  # web-1 was not enrolled by the refusal


def test_a_command_key_that_is_no_ed25519_key_is_refused(pki: Path, tmp_path: Path) -> None:
    refused = enrol(pki, tmp_path / "web-1.tar", "--command-key", "bm90IGEga2V5")
    assert refused.returncode == 2
    assert refused.stderr.strip() == "fleetctl: a trusted command key must be 32 bytes, got 9"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        ("not a tar", "is not a Fleetwave bundle (a tar file)"),
        ("extra member", "unexpected member '../evil' in the bundle"),
        ("link", "host.key in the bundle is not a regular file"),
        ("missing key", "is not a Fleetwave bundle: host.key missing"),
        ("bad settings", "the agent settings in it are invalid"),
    ],
)
def test_install_refuses_a_bad_bundle_and_writes_nothing(
    pki: Path, tmp_path: Path, make: str, says: str
) -> None:
    good = tmp_path / "good.tar"
    assert enrol(pki, good).returncode == 0
    contents = {name: data for name, (_, data) in members(good).items()}
    bad = tmp_path / "bad.tar"
    if make == "not a tar":
        bad.write_text("hello")
    else:
        with tarfile.open(bad, "w") as tar:
            for name, data in contents.items():
                if make == "missing key" and name == "host.key":
                    continue
                if make == "link" and name == "host.key":
                    info = tarfile.TarInfo(name)
                    info.type = tarfile.SYMTYPE
                    info.linkname = "/etc/shadow"
                    tar.addfile(info)
                    continue
                if make == "bad settings" and name == "agent.toml":
                    data = b'host_id = "no spaces allowed"\n'
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            if make == "extra member":
                info = tarfile.TarInfo("../evil")
                tar.addfile(info, io.BytesIO(b""))
    root = tmp_path / "root"
    done = run(
        fleet_agent(), "install", "--bundle", str(bad), "--mode", "systemd", "--root", str(root)
    )
    assert done.returncode == 2
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not root.exists()
