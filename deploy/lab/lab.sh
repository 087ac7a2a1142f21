#!/usr/bin/env bash
# The lab: N real hosts on this machine (default 3), each as a user would set one up.
#
#   - host i is a network namespace (fleetlab-hI) with its own dockerd (own socket,
#     data-root on a tmpfs of its own, exec-root, cgroup parent), joined to this machine
#     by one veth link to the bridge fleetlab0 (10.253.0.1/24; the host is 10.253.0.1I);
#   - the bus is a 3-node NATS cluster (deploy/nats/cluster, TLS with client
#     certificates) on 10.253.0.1:4222-4224, and the registry is reached at
#     10.253.0.1:5000 (socat to the local stack's 127.0.0.1:5000): only through the link;
#   - each host is enrolled with a bundle (fleetctl hosts enroll --bundle) and runs the
#     agent image (make agent-image) as a container (fleet-agent install --mode container).
#
# usage: deploy/lab/lab.sh up [N] | down | env | FAULT I ...
#   up      bring up what is missing (idempotent); ready when every agent heartbeats
#   down    stop everything and remove the lab's state
#   env     the lab's settings (KEY=VALUE): bus URLs, the controller's TLS files, hosts
#   faults  cut/heal I (host i's link), engine-stop/engine-start I (its dockerd; its
#           containers keep running: live-restore), fill I MIB (leave MIB free on its
#           disk) and unfill I
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE=${FLEET_LAB_DIR:-/var/lib/fleetwave/lab}
RUN=/run/fleetlab
BIN=$ROOT/.venv/bin
DOCKER=/usr/bin/docker
BRIDGE=fleetlab0
GATEWAY=10.253.0.1
REGISTRY=$GATEWAY:5000
NATS_PORTS=(4222 4223 4224)
ROUTE_PORTS=(6222 6223 6224)
HOST_DISK=2g
READY_TIMEOUT=90

log() { echo "lab: $*" >&2; }
die() { echo "lab: error: $*" >&2; exit 1; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
host_name() { echo "lab-h$1"; }
netns_of() { echo "fleetlab-h$1"; }
socket_of() { echo "$RUN/h$1/engine/docker.sock"; }  # a directory of its own: see install
nats_urls() { local p; for p in "${NATS_PORTS[@]}"; do echo "tls://$GATEWAY:$p"; done; }

controller_env() {  # the controller's bus settings, as `env` prints them
    cat <<ENV
FLEET_NATS_URLS=$(nats_urls | paste -sd, -)
FLEET_NATS_TLS_CA=$STATE/pki/ca.crt
FLEET_NATS_TLS_CERT=$STATE/pki/clients/controller.crt
FLEET_NATS_TLS_KEY=$STATE/pki/clients/controller.key
FLEET_BUS_USER=controller
FLEET_SIGNING_KEY_FILE=$STATE/controller.key
FLEET_INSECURE_REGISTRIES=["$REGISTRY"]
ENV
}

install_missing_packages() {
    local missing=()
    command -v socat >/dev/null || missing+=(socat)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v nsenter >/dev/null || missing+=(util-linux)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >"$STATE/apt.log" 2>&1 || die "apt-get install failed, see $STATE/apt.log"
}

# ---- the machine's side: bridge, registry, bus ----

bring_up_bridge() {
    ip link show "$BRIDGE" >/dev/null 2>&1 && return
    ip link add "$BRIDGE" type bridge
    ip addr add "$GATEWAY/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

bring_up_registry_link() {
    pid_alive "$STATE/socat.pid" && return
    setsid socat "TCP-LISTEN:5000,bind=$GATEWAY,fork,reuseaddr" TCP:127.0.0.1:5000 \
        >"$STATE/socat.log" 2>&1 </dev/null &
    echo $! >"$STATE/socat.pid"
}

bring_up_pki() {  # each step unless done (a run that failed half way is finished)
    [ -f "$STATE/pki/ca.crt" ] \
        || "$BIN/fleetctl" pki init --dir "$STATE/pki" --server-name "$GATEWAY" >/dev/null
    if [ ! -s "$STATE/controller.pub" ]; then
        rm -f "$STATE/controller.key"
        "$BIN/fleetctl" keys generate --out "$STATE/controller.key" >"$STATE/controller.pub"
    fi
    # A read-only user for those who watch (the tests record events and heartbeats).
    [ -f "$STATE/pki/clients/lab-reader.crt" ] \
        || "$BIN/fleetctl" hosts enroll lab-reader --pki "$STATE/pki" --role reader >/dev/null
}

nats_config() {  # node (1-3): the shipped cluster config, with the lab's addresses
    local node=$1
    sed -e "s|/etc/fleetwave/pki|$STATE/pki|; s|/var/lib/fleetwave/nats|$STATE/nats-$node|" \
        -e "s|0.0.0.0:4222|$GATEWAY:${NATS_PORTS[$((node - 1))]}|" \
        -e "s|0.0.0.0:6222|$GATEWAY:${ROUTE_PORTS[$((node - 1))]}|" \
        -e "s|nats-route://nats-[123].internal:6222|nats-route://$GATEWAY:ROUTE|" \
        "$ROOT/deploy/nats/cluster/node-$node.conf" \
        | awk -v ports="${ROUTE_PORTS[*]}" 'BEGIN { split(ports, p, " ") }
            /nats-route:\/\// { n++; sub(/ROUTE/, p[n]) } { print }'
}

bring_up_bus() {
    local node server
    server=$("$BIN/python" -c 'from controller.broker import find_nats_server_binary as f; print(f())')
    for node in 1 2 3; do
        if pid_alive "$STATE/nats-$node.pid"; then
            kill -HUP "$(cat "$STATE/nats-$node.pid")"  # users.conf may have new hosts
            continue
        fi
        nats_config "$node" >"$STATE/nats-$node.conf"
        setsid "$server" -c "$STATE/nats-$node.conf" -P "$STATE/nats-$node.pid" \
            >"$STATE/nats-$node.log" 2>&1 </dev/null &
    done
}

# ---- one host ----

bring_up_link() {  # i
    local ns outside inside
    ns=$(netns_of "$1") outside="flh$1-o" inside="flh$1-i"
    ip netns list | grep -qw "$ns" || ip netns add "$ns"
    if ! ip link show "$outside" >/dev/null 2>&1; then
        ip link add "$outside" type veth peer name "$inside"
        ip link set "$inside" netns "$ns"
        ip -n "$ns" addr add "10.253.0.$((10 + $1))/24" dev "$inside"
    fi
    # Always: a link left from an earlier lab is put on this lab's bridge.
    ip link set "$outside" master "$BRIDGE"
    ip link set "$outside" up
    ip -n "$ns" link set "$inside" up
    ip -n "$ns" link set lo up
}

engine_answers() { curl -sf -m 3 --unix-socket "$(socket_of "$1")" http://localhost/_ping >/dev/null 2>&1; }

bring_up_engine() {  # i
    local dir=$STATE/hosts/h$1 waited=0
    engine_answers "$1" && return
    mkdir -p "$dir/docker" "$RUN/h$1/engine"
    mountpoint -q "$dir/docker" || mount -t tmpfs -o "size=$HOST_DISK" "lab-h$1" "$dir/docker"
    setsid nsenter --net="/var/run/netns/$(netns_of "$1")" dockerd \
        --host "unix://$(socket_of "$1")" --data-root "$dir/docker" \
        --exec-root "$RUN/h$1/exec" --pidfile "$RUN/h$1/dockerd.pid" \
        --cgroup-parent "/fleetlab-h$1" --insecure-registry "$REGISTRY" \
        --bridge=none --iptables=false --ip6tables=false --live-restore \
        >>"$dir/dockerd.log" 2>&1 </dev/null &
    until engine_answers "$1"; do
        [ $waited -lt 300 ] || die "lab-h$1's dockerd did not answer in 60 s, see $dir/dockerd.log"
        sleep 0.2
        waited=$((waited + 1))
    done
}

enrol() {  # i
    local bundle=$STATE/hosts/h$1/bundle.tar urls=()
    [ -f "$bundle" ] && return
    mapfile -t urls < <(nats_urls)
    "$BIN/fleetctl" hosts enroll "$(host_name "$1")" --pki "$STATE/pki" --bundle "$bundle" \
        "${urls[@]/#/--nats=}" --command-key "$(cat "$STATE/controller.pub")" \
        --labels "lab=yes,host=h$1" >/dev/null
}

install_agent() {  # i image: (re)installed unless it runs that very image already
    local dir=$STATE/hosts/h$1 engine running wanted
    engine="unix://$(socket_of "$1")"
    "$DOCKER" -H "$engine" pull -q "$2" >/dev/null || die "lab-h$1 cannot pull $2"
    wanted=$("$DOCKER" -H "$engine" image inspect -f '{{.Id}}' "$2")
    running=$("$DOCKER" -H "$engine" inspect -f '{{.State.Running}} {{.Image}}' fleet-agent 2>/dev/null || true)
    [ "$running" = "true $wanted" ] && return
    "$BIN/fleet-agent" install --bundle "$dir/bundle.tar" --mode container --image "$2" \
        --config-dir "$dir/etc" --state-dir "$dir/state" \
        --docker-host "unix://$(socket_of "$1")" --socket-dir --replace >/dev/null
    # The lab's registry speaks plain HTTP, and tests wait for heartbeats: one a second.
    # sed -i renames a whole new file in, so the agent never reads half of one; then a
    # restart, since a SIGHUP could come before the agent has its handler.
    sed -i -e "1i heartbeat_interval = 1.0" -e "1i insecure_registries = [\"$REGISTRY\"]" \
        "$dir/etc/agent.toml"
    "$DOCKER" -H "$engine" restart -t 5 fleet-agent >/dev/null
}

reporting_hosts() {  # how many lab hosts are in `fleetctl hosts`; fails while the bus is away
    local listed
    listed=$(env $(controller_env) "$BIN/fleetctl" hosts -o json 2>/dev/null) || return 1
    "$BIN/python" -c 'import json, sys; print(sum(h["host"].startswith("lab-h") and h["status"] == "up" for h in json.load(sys.stdin)))' <<<"$listed"
}

wait_for_hosts() {  # n: until n hosts report (0: until the bus answers the controller)
    local waited=0 seen
    until seen=$(reporting_hosts) && [ "$seen" -ge "$1" ]; do
        [ $waited -lt $((READY_TIMEOUT * 5)) ] || die "${seen:-no} of $1 hosts reported within ${READY_TIMEOUT}s; see $STATE/"
        sleep 0.2
        waited=$((waited + 1))
    done
}

cmd_up() {
    local count=${1:-3} i image started
    [ "$(id -u)" = 0 ] || die "run as root: it makes network namespaces and starts dockerd"
    started=$(date +%s%N)
    mkdir -p "$STATE" "$RUN"
    install_missing_packages
    image=$(bash "$ROOT/deploy/agent/build.sh" 2>"$STATE/agent-image.log") \
        || die "make agent-image failed: $(tail -n 3 "$STATE/agent-image.log")"
    image=${image/127.0.0.1:5000/$REGISTRY}
    bring_up_bridge
    bring_up_registry_link
    bring_up_pki
    for i in $(seq 1 "$count"); do
        bring_up_link "$i"
        bring_up_engine "$i"
        enrol "$i"
    done
    bring_up_bus
    # The controller's first call makes the streams and buckets: hosts may not.
    wait_for_hosts 0
    for i in $(seq 1 "$count"); do install_agent "$i" "$image"; done
    wait_for_hosts "$count"
    { controller_env; echo "FLEET_LAB_HOSTS=\"$(for i in $(seq 1 "$count"); do host_name "$i"; done | paste -sd' ' -)\""
      echo "FLEET_LAB_REGISTRY=$REGISTRY"; echo "FLEET_LAB_AGENT_IMAGE=$image"; echo "FLEET_LAB_RUN=$RUN"; } >"$STATE/lab.env"
    log "up: $count hosts, each with its engine and its agent, in $(( ($(date +%s%N) - started) / 1000000000 )) s (settings: $STATE/lab.env)"
}

stop_pid() {  # pidfile
    local pid i
    pid_alive "$1" || { rm -f "$1"; return; }
    pid=$(cat "$1")
    kill -TERM "$pid"
    for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

cmd_down() {
    local dir i ns hosts=()
    for dir in "$RUN"/h*; do [ -d "$dir" ] && hosts+=("${dir##*/h}"); done
    for ns in $(ip netns list | grep -o 'fleetlab-h[0-9]*'); do  # half made ones too
        i=${ns#fleetlab-h}
        [[ " ${hosts[*]} " == *" $i "* ]] || hosts+=("$i")
    done
    for i in "${hosts[@]}"; do  # the hosts' containers go with them, at once
        # An engine a test stopped left its containers running (live-restore): start it,
        # so they can be removed.
        [ -f "$STATE/hosts/h$i/bundle.tar" ] && ! engine_answers "$i" && bring_up_engine "$i"
        engine_answers "$i" || continue
        "$DOCKER" -H "unix://$(socket_of "$i")" ps -aq \
            | xargs -r "$DOCKER" -H "unix://$(socket_of "$i")" rm -f >/dev/null 2>&1 || true
    done
    for i in "${hosts[@]}"; do  # every engine stops at once
        pid_alive "$RUN/h$i/dockerd.pid" && kill -TERM "$(cat "$RUN/h$i/dockerd.pid")"
    done
    for i in "${hosts[@]}"; do
        stop_pid "$RUN/h$i/dockerd.pid"
        # What dockerd left mounted (its view of the namespace), then the host's disk.
        awk -v under="$RUN/h$i/" 'index($2, under) == 1 { print $2 }' /proc/mounts | sort -r \
            | xargs -r -n1 umount -l
        mountpoint -q "$STATE/hosts/h$i/docker" && umount -l "$STATE/hosts/h$i/docker"
        ip link del "flh$i-o" 2>/dev/null || true
        ip netns del "$(netns_of "$i")" 2>/dev/null || true
    done
    for i in 1 2 3; do stop_pid "$STATE/nats-$i.pid"; done
    stop_pid "$STATE/socat.pid"
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -rf "$STATE" "$RUN"
    log "down"
}

# ---- faults, for the tests ----

cmd_cut() { ip link set "flh$1-o" down; }   # every packet across host i's link is dropped
cmd_heal() { ip link set "flh$1-o" up; }
cmd_engine_stop() { stop_pid "$RUN/h$1/dockerd.pid"; }  # live-restore: containers run on
cmd_engine_start() { bring_up_engine "$1"; }
cmd_fill() {  # i MiB: leave only that much free on host i's disk (its engine's data-root)
    local disk=$STATE/hosts/h$1/docker free
    rm -f "$disk/fill"
    free=$(df --output=avail -B1M "$disk" | tail -1)
    [ "$free" -gt "$2" ] && fallocate -l "$((free - $2))M" "$disk/fill"
    return 0
}
cmd_unfill() { rm -f "$STATE/hosts/h$1/docker/fill"; }

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    cut) cmd_cut "$2" ;;
    heal) cmd_heal "$2" ;;
    engine-stop) cmd_engine_stop "$2" ;;
    engine-start) cmd_engine_start "$2" ;;
    fill) cmd_fill "$2" "$3" ;;
    unfill) cmd_unfill "$2" ;;
    down) cmd_down ;;
    env) [ -f "$STATE/lab.env" ] || die "the lab is not up: $0 up"; cat "$STATE/lab.env" ;;
    *) echo "usage: $0 up [N]|down|env|cut I|heal I|engine-stop I|engine-start I|fill I MIB|unfill I" >&2; exit 2 ;;
esac
