#!/usr/bin/env bash
# Build the fleet-agent image and push it to the local registry: `make agent-image`.
#
#   1. the base: a minimal Debian with Python 3.11, made by mmdebstrap from Debian's
#      packages (no image can be pulled here) and imported with `docker import`;
#   2. the wheels: Fleetwave and the agent's dependencies (not the controller's), built
#      on this machine with the project's virtualenv;
#   3. deploy/agent/Dockerfile: a builder stage installs the wheels into a venv, the final
#      stage copies only the venv onto the base.
#
# Idempotent: a base or an image whose inputs did not change is reused, and an image
# already in the registry is not pushed again. Prints the image's size and build time.
# usage: deploy/agent/build.sh [VERSION]   (default: the version in pyproject.toml)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE=${FLEET_STACK_DIR:-/var/lib/fleetwave/stack}
DOCKER=/usr/bin/docker
REGISTRY=${FLEET_REGISTRY:-127.0.0.1:5000}
REPOSITORY=fleetwave/agent
PIP=${FLEET_PIP:-$ROOT/.venv/bin/pip}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
# Python and the C libraries it loads; no recommends, no docs, manuals, locales or
# charset converters (Python brings its own codecs).
BASE_PACKAGES=python3.11,python3-minimal
BASE_OPTIONS=(
    --variant=essential --include="$BASE_PACKAGES"
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --aptopt='Apt::Install-Recommends "false"'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*'
)

log() { echo "agent-image: $*" >&2; }
die() { echo "agent-image: error: $*" >&2; exit 1; }

project_version() {
    python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
        "$ROOT/pyproject.toml"
}

digest_of() {  # everything on stdin, as a short hash
    sha256sum | cut -c1-16
}

base_image() {  # prints the base's tag, making it first if missing
    local key tag tarball
    key=$(printf '%s\n' "$SUITE" "$MIRROR" "${BASE_OPTIONS[@]}" | digest_of)
    tag="fleetwave/debian-python:$SUITE-$key"
    if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
        log "base: $tag already here"
    else
        command -v mmdebstrap >/dev/null || install_mmdebstrap
        tarball=$(mktemp --suffix=.tar)
        log "base: making $tag with mmdebstrap (Debian $SUITE, $BASE_PACKAGES)"
        mmdebstrap "${BASE_OPTIONS[@]}" "$SUITE" "$tarball" \
            "deb $MIRROR $SUITE main" "deb $SECURITY $SUITE-security main" \
            >"$STATE/mmdebstrap.log" 2>&1 \
            || die "mmdebstrap failed (is $MIRROR reachable?); see $STATE/mmdebstrap.log"
        "$DOCKER" import --change 'CMD ["python3"]' "$tarball" "$tag" >/dev/null \
            || { rm -f "$tarball"; die "docker import of the base failed"; }
        rm -f "$tarball"
    fi
    echo "$tag"
}

install_mmdebstrap() {
    [ "$(id -u)" = 0 ] || die "mmdebstrap is missing; run as root to install it"
    log "installing mmdebstrap (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap \
        >/dev/null || die "apt-get install mmdebstrap failed"
}

sources_digest() {  # what the image is made of, so an unchanged image is not rebuilt
    (
        cd "$ROOT"
        find controller node_agent protocol fleet_registry \
            -name '*.py' -o -name '*.json' -o -name '*.service' \
            | LC_ALL=C sort | xargs sha256sum
        sha256sum pyproject.toml README.md deploy/agent/Dockerfile deploy/agent/build.sh
    ) | digest_of
}

build_wheels() {  # dir
    log "wheels: Fleetwave and the agent's dependencies"
    local scratch_was_there=0
    [ -e "$ROOT/build" ] && scratch_was_there=1
    "$PIP" wheel --isolated --quiet --disable-pip-version-check --wheel-dir "$1" "$ROOT" \
        || die "pip wheel failed"
    # setuptools' scratch space in the checkout, unless someone had a build/ of their own
    [ "$scratch_was_there" = 1 ] || rm -rf "$ROOT/build"
    "$PIP" download --isolated --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --dest "$1/pip-download" pip || die "pip download pip failed"
    mv "$1"/pip-download/pip-*.whl "$1/pip.whl"
    rmdir "$1/pip-download"
}

in_registry() {  # tag
    curl -sf -m 5 -o /dev/null \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$REGISTRY/v2/$REPOSITORY/manifests/$1"
}

main() {
    local version=${1:-$(project_version)} base fingerprint image current ctx started took size
    export DOCKER_HOST=${FLEET_DOCKER_HOST:-unix:///var/run/docker.sock} DOCKER_BUILDKIT=0
    "$DOCKER" info >/dev/null 2>&1 || die "no Docker engine at $DOCKER_HOST (make stack-up)"
    # One build at a time: parallel test workers ask for the image at the same moment.
    mkdir -p "$STATE"
    exec 9>"$STATE/agent-image.lock"
    flock -w 900 9 || die "another build held the lock for 15 minutes"
    started=$(date +%s%N)
    base=$(base_image) || exit 1  # (errexit does not reach into $(...): its die did)
    image="$REGISTRY/$REPOSITORY:$version"
    fingerprint=$( (echo "$base"; "$DOCKER" image inspect -f '{{.Id}}' "$base"; sources_digest) | digest_of)
    current=$("$DOCKER" image inspect -f '{{index .Config.Labels "io.fleetwave.build"}}' "$image" 2>/dev/null || true)
    if [ "$current" = "$fingerprint" ]; then
        log "image: $image is current"
    else
        ctx=$(mktemp -d)
        cp "$HERE/Dockerfile" "$ctx/"
        build_wheels "$ctx/wheels"
        log "image: building $image"
        "$DOCKER" build -q --build-arg "BASE=$base" --build-arg "VERSION=$version" \
            --label "io.fleetwave.build=$fingerprint" -t "$image" "$ctx" >/dev/null \
            || { rm -rf "$ctx"; die "docker build failed"; }
        rm -rf "$ctx"
    fi
    if [ "$current" = "$fingerprint" ] && in_registry "$version"; then
        log "registry: $image already pushed"
    else
        "$DOCKER" push -q "$image" >/dev/null || die "docker push to $REGISTRY failed"
        log "registry: pushed $image"
    fi
    took=$(( ($(date +%s%N) - started) / 1000000000 ))
    size=$("$DOCKER" image inspect -f '{{.Size}}' "$image")
    log "image: $image, $((size / 1000000)) MB, ready in ${took} s"
    echo "$image"
}

main "$@"
