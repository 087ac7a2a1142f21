#!/usr/bin/env bash
# Create the project's virtualenv with a Python >= 3.11, installing Debian's python3-venv
# first when this Python cannot make one (a bare Debian ships python3 without ensurepip).
# usage: deploy/local/python-env.sh VENV_DIR
set -euo pipefail
venv=${1:?usage: $0 VENV_DIR}
[ -x "$venv/bin/python" ] && exit 0

if ! command -v python3 >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "python-env: Fleetwave needs Python >= 3.11, found $(python3 --version)" >&2; exit 1; }
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
python3 -m venv "$venv"
