"""fleetctl's entry point: says in one line when the controller's packages are missing.

`pip install fleetwave` is what an agent host needs; the controller and its CLI also need
the `controller` extra (the policy engine, the certificate tools, the exporter).
"""

from __future__ import annotations

import sys

CONTROLLER_PACKAGES = frozenset({"regopy", "cryptography", "prometheus_client"})


def main() -> None:
    try:
        from controller.cli.app import app
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in CONTROLLER_PACKAGES:
            raise
        sys.stderr.write(
            f"fleetctl: the package {exc.name} is missing; "
            "install the controller's: pip install 'fleetwave[controller]'\n"
        )
        raise SystemExit(2) from None
    app()
