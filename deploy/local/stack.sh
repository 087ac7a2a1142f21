#!/usr/bin/env bash
# The local stack every Fleetwave test and demo runs against, on this machine only:
#   - a Docker engine (Debian's docker.io) with no bridge networks, ever;
#   - an open registry on 127.0.0.1:5000 and one requiring htpasswd auth on 127.0.0.1:5001
#     (Debian's docker-registry);
#   - the demo/web images, built FROM scratch with Debian's static busybox and pushed to both.
#
# usage: deploy/local/stack.sh up|down|status|env
#   up      install what is missing, start what is not running, build and push images
#   down    stop what `up` started (by pid); leaves an engine someone else started alone
#   status  say what runs
#   env     print the stack's settings (KEY=VALUE) for tests and demos
#
# Idempotent: `up` twice in a row reuses what runs. State lives in $FLEET_STACK_DIR
# (default /var/lib/fleetwave/stack), shared by every checkout on this machine because
# the ports and the engine are machine-wide too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${FLEET_STACK_DIR:-/var/lib/fleetwave/stack}
DOCKER_SOCK=${FLEET_DOCKER_SOCK:-/var/run/docker.sock}
OPEN_REGISTRY=127.0.0.1:5000
AUTH_REGISTRY=127.0.0.1:5001
AUTH_USER=fleet
DOCKER=/usr/bin/docker   # Debian's client; an engine-less client elsewhere on PATH may differ
DEMO_REPO=demo/web
# tag:behaviour — each tag of demo/web is one real behaviour (see images/web/demo-web).
DEMO_TAGS=(
    1.0.0:healthy 1.1.0:healthy 2.0.0:healthy
    3.0.0-crash:crash 3.0.1-unhealthy:unhealthy 3.0.2-slow:slow 3.0.3-stubborn:stubborn
)
ENGINE_TIMEOUT=60

log() { echo "stack: $*" >&2; }
die() { echo "stack: error: $*" >&2; exit 1; }

require_root() {
    [ "$(id -u)" = 0 ] || die "run as root: it installs Debian packages and starts dockerd"
}

is_static_busybox() {
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1
}

install_missing_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    [ -x /usr/bin/docker ] || missing+=(docker.io)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    is_static_busybox || missing+=(busybox-static)
    command -v htpasswd >/dev/null || missing+=(apache2-utils)
    command -v curl >/dev/null || missing+=(curl)
    command -v nsenter >/dev/null || missing+=(util-linux)
    command -v ip >/dev/null || missing+=(iproute2)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >"$STATE/apt.log" 2>&1 || die "apt-get install failed, see $STATE/apt.log"
    fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

engine_answers() {
    curl -sf -m 3 --unix-socket "$DOCKER_SOCK" http://localhost/_ping >/dev/null 2>&1
}

start_engine() {
    if engine_answers; then
        log "engine: answering on $DOCKER_SOCK (reused)"
        return
    fi
    log "engine: starting dockerd (no bridge, no iptables)"
    # setsid: the daemon outlives the shell (and the make) that started it.
    setsid dockerd \
        --host "unix://$DOCKER_SOCK" \
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        --pidfile "$STATE/dockerd.pid" \
        >"$STATE/dockerd.log" 2>&1 </dev/null &
    local waited=0
    until engine_answers; do
        if ! kill -0 $! 2>/dev/null; then
            die "dockerd exited during start-up; last lines of $STATE/dockerd.log:
$(tail -n 15 "$STATE/dockerd.log")"
        fi
        [ $waited -lt $((ENGINE_TIMEOUT * 5)) ] || die "dockerd did not answer within ${ENGINE_TIMEOUT}s, see $STATE/dockerd.log"
        sleep 0.2
        waited=$((waited + 1))
    done
    log "engine: answering on $DOCKER_SOCK"
}

registry_answers() {  # 200 (open) and 401 (auth) both mean a registry is there
    local code
    code=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://$1/v2/" || true)
    [ "$code" = 200 ] || [ "$code" = 401 ]
}

ensure_auth_credentials() {
    local dir="$STATE/registry-auth"
    mkdir -p "$dir"
    chmod 700 "$dir"
    if [ ! -s "$dir/password" ]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/password")
        rm -f "$dir/htpasswd"
    fi
    if [ ! -s "$dir/htpasswd" ]; then
        htpasswd -Bbn "$AUTH_USER" "$(cat "$dir/password")" >"$dir/htpasswd"
    fi
}

write_registry_config() {  # name addr [auth]
    local name=$1 addr=$2 auth=${3:-}
    mkdir -p "$STATE/$name/data"
    {
        echo "version: 0.1"
        echo "log: {level: warn}"
        echo "storage: {filesystem: {rootdirectory: $STATE/$name/data}, delete: {enabled: true}}"
        echo "http: {addr: $addr}"
        if [ -n "$auth" ]; then
            echo "auth: {htpasswd: {realm: fleetwave, path: $STATE/registry-auth/htpasswd}}"
        fi
    } >"$STATE/$name/config.yml"
}

start_registry() {  # name addr [auth]
    local name=$1 addr=$2
    if registry_answers "$addr"; then
        log "$name: answering on $addr (reused)"
        return
    fi
    write_registry_config "$@"
    setsid docker-registry serve "$STATE/$name/config.yml" \
        >"$STATE/$name/registry.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name/pid"
    local i
    for i in $(seq 1 100); do
        registry_answers "$addr" && { log "$name: answering on $addr"; return; }
        pid_alive "$STATE/$name/pid" || break
        sleep 0.1
    done
    die "$name did not start on $addr; last lines of its log:
$(tail -n 10 "$STATE/$name/registry.log")"
}

images_fingerprint() {
    (
        cd "$HERE/images/web"
        sha256sum Dockerfile demo-web demo-handler /bin/busybox
        printf '%s\n' "${DEMO_TAGS[@]}"
    ) | sha256sum | cut -d' ' -f1
}

registry_has_tag() {  # registry repo tag [user:password]
    local auth=()
    [ -z "${4:-}" ] || auth=(-u "$4")
    curl -sf -m 5 "${auth[@]}" -o /dev/null \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$1/v2/$2/manifests/$3"
}

images_are_current() {
    local fingerprint=$1 creds entry
    [ "$(cat "$STATE/images.fingerprint" 2>/dev/null)" = "$fingerprint" ] || return 1
    creds="$AUTH_USER:$(cat "$STATE/registry-auth/password")"
    for entry in "${DEMO_TAGS[@]}"; do
        registry_has_tag "$OPEN_REGISTRY" "$DEMO_REPO" "${entry%%:*}" || return 1
        registry_has_tag "$AUTH_REGISTRY" "$DEMO_REPO" "${entry%%:*}" "$creds" || return 1
    done
}

build_and_push_images() {
    local fingerprint entry tag behaviour ctx
    fingerprint=$(images_fingerprint)
    if images_are_current "$fingerprint"; then
        log "images: $DEMO_REPO (${#DEMO_TAGS[@]} tags) already in both registries"
        return
    fi
    ctx=$(mktemp -d)
    cp "$HERE/images/web/Dockerfile" "$HERE/images/web/demo-web" "$HERE/images/web/demo-handler" "$ctx/"
    cp /bin/busybox "$ctx/busybox"
    export DOCKER_HOST="unix://$DOCKER_SOCK" DOCKER_BUILDKIT=0
    # A private client config, so logging in to the auth registry touches no one else's.
    export DOCKER_CONFIG="$STATE/docker-config"
    mkdir -p "$DOCKER_CONFIG"
    "$DOCKER" login -u "$AUTH_USER" --password-stdin "$AUTH_REGISTRY" \
        <"$STATE/registry-auth/password" >/dev/null 2>&1 || die "docker login to $AUTH_REGISTRY failed"
    for entry in "${DEMO_TAGS[@]}"; do
        tag=${entry%%:*}
        behaviour=${entry##*:}
        log "images: building $DEMO_REPO:$tag ($behaviour)"
        "$DOCKER" build -q --build-arg "VERSION=$tag" --build-arg "BEHAVIOUR=$behaviour" \
            -t "$OPEN_REGISTRY/$DEMO_REPO:$tag" "$ctx" >/dev/null
        "$DOCKER" tag "$OPEN_REGISTRY/$DEMO_REPO:$tag" "$AUTH_REGISTRY/$DEMO_REPO:$tag"
        "$DOCKER" push -q "$OPEN_REGISTRY/$DEMO_REPO:$tag" >/dev/null
        "$DOCKER" push -q "$AUTH_REGISTRY/$DEMO_REPO:$tag" >/dev/null
    done
    rm -rf "$ctx"
    echo "$fingerprint" >"$STATE/images.fingerprint"
    log "images: pushed ${#DEMO_TAGS[@]} tags of $DEMO_REPO to $OPEN_REGISTRY and $AUTH_REGISTRY"
}

write_env() {
    local tags=() entry
    for entry in "${DEMO_TAGS[@]}"; do tags+=("${entry%%:*}"); done
    cat >"$STATE/stack.env" <<ENV
FLEET_DOCKER_HOST=unix://$DOCKER_SOCK
FLEET_REGISTRY=$OPEN_REGISTRY
FLEET_AUTH_REGISTRY=$AUTH_REGISTRY
FLEET_AUTH_REGISTRY_USER=$AUTH_USER
FLEET_AUTH_REGISTRY_PASSWORD_FILE=$STATE/registry-auth/password
FLEET_DEMO_REPOSITORY=$DEMO_REPO
FLEET_DEMO_TAGS="${tags[*]}"
ENV
}

cmd_up() {
    require_root
    mkdir -p "$STATE"
    install_missing_packages
    start_engine
    ensure_auth_credentials
    start_registry registry-open "$OPEN_REGISTRY"
    start_registry registry-auth-server "$AUTH_REGISTRY" auth
    build_and_push_images
    write_env
    log "up: engine, registries and images ready (settings: $STATE/stack.env)"
}

stop_pidfile() {  # name pidfile
    local name=$1 pidfile=$2 pid i
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        return
    fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { log "$name: stopped"; rm -f "$pidfile"; return; }
        sleep 0.2
    done
    log "$name: did not stop in 30s, killing"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

cmd_down() {
    stop_pidfile registry-open "$STATE/registry-open/pid"
    stop_pidfile registry-auth "$STATE/registry-auth-server/pid"
    stop_pidfile dockerd "$STATE/dockerd.pid"
}

cmd_status() {
    local ok=0
    if engine_answers; then echo "engine:        running ($DOCKER_SOCK)"; else echo "engine:        down"; ok=1; fi
    if registry_answers "$OPEN_REGISTRY"; then echo "registry-open: running ($OPEN_REGISTRY)"; else echo "registry-open: down"; ok=1; fi
    if registry_answers "$AUTH_REGISTRY"; then echo "registry-auth: running ($AUTH_REGISTRY, htpasswd)"; else echo "registry-auth: down"; ok=1; fi
    if [ -f "$STATE/images.fingerprint" ]; then echo "images:        $DEMO_REPO built"; else echo "images:        not built"; ok=1; fi
    return $ok
}

cmd_env() {
    [ -f "$STATE/stack.env" ] || die "the stack is not up: run $0 up"
    cat "$STATE/stack.env"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
