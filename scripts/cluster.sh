#!/bin/sh
# cluster.sh - a faiss-proxy cluster on this machine, for trying it out: three
# nats-server processes (JetStream, routed to each other) and three faiss-proxy
# nodes on loopback, with their data under ./cluster-data (make cluster).
# Prints the endpoints; Ctrl-C stops everything it started (by PID).
#
#   FPX_CLUSTER_BASE  first port (default 14222): NATS clients BASE..BASE+2,
#                     NATS routes BASE+10.., faiss-proxy nodes BASE+20..
set -eu

BUILD=${BUILD:-build}
BASE=${FPX_CLUSTER_BASE:-14222}
DATA=${FPX_CLUSTER_DATA:-$PWD/cluster-data}
SERVER=$BUILD/faiss-proxy-server
command -v nats-server >/dev/null 2>&1 || { echo "cluster: nats-server is not installed (make build installs it)" >&2; exit 1; }
[ -x "$SERVER" ] || { echo "cluster: $SERVER is missing: run make build" >&2; exit 1; }
mkdir -p "$DATA"

pids=""
stop() {
    trap - INT TERM EXIT
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    echo "cluster: stopped"
}
trap stop INT TERM EXIT

urls=""
routes=""
for i in 1 2 3; do
    urls="$urls${urls:+,}nats://127.0.0.1:$((BASE + i - 1))"
    routes="$routes${routes:+, }nats-route://127.0.0.1:$((BASE + 9 + i))"
done
for i in 1 2 3; do
    d="$DATA/nats$i"
    mkdir -p "$d"
    # max_payload 64 MB: a write's log record carries the whole request (docs/cluster.md)
    cat >"$d/nats.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((BASE + i - 1))
max_payload: 67108864
jetstream { store_dir: "$d/js" }
cluster { name: faiss-proxy, listen: 127.0.0.1:$((BASE + 9 + i)), routes: [$routes] }
CONF
    nats-server -c "$d/nats.conf" >"$d/nats.log" 2>&1 &
    pids="$pids $!"
done
for i in 1 2 3; do
    port=$((BASE + 19 + i))
    "$SERVER" --bind 127.0.0.1 --port "$port" --data-dir "$DATA/node$i" \
        --cluster "$urls" --node-id "node$i" >"$DATA/node$i.log" 2>&1 &
    pids="$pids $!"
done
for i in 1 2 3; do
    port=$((BASE + 19 + i))
    n=0
    until grep -q "listening on" "$DATA/node$i.log" 2>/dev/null; do
        n=$((n + 1))
        if [ "$n" -gt 600 ]; then
            echo "cluster: node$i did not start (see $DATA/node$i.log)" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "node$i: tcp://127.0.0.1:$port (log $DATA/node$i.log)"
done
echo "NATS: $urls"
echo "cluster: running; Ctrl-C stops it"
while :; do sleep 3600; done
