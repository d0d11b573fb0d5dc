#!/usr/bin/env bash
# bench/profile.sh - where the server's instructions go per search request.
#
# Runs the round-trip workload of fpx-bench (short sizes: 300 single-query
# searches on a 1,000 x 128 flat index, plus set-up) against a server under
# valgrind --tool=callgrind, then splits the server's instructions into
# FAISS's search, the rest of request handling, and everything else (ZeroMQ,
# the broker, start-up and shutdown). Instruction counts do not depend on
# machine load, so the figures repeat run to run.
#
#   bench/profile.sh [OUTDIR]     default build/profile; callgrind.out is kept
#                                 there for callgrind_annotate / kcachegrind
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/profile}
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "profile: valgrind is not installed" >&2; exit 1; }
make build >/dev/null
out=$(cd "$out" && pwd)
rm -f "$out"/callgrind.out*

wrapper="$out/server-under-callgrind"
cat >"$wrapper" <<W
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.out.%p $PWD/build/faiss-proxy-server "\$@"
W
chmod +x "$wrapper"
build/bench/fpx-bench --server "$wrapper" --echo build/bench/fpx-echo --out "$out" --short \
    --only 1 >"$out/bench.log" 2>&1 || { cat "$out/bench.log" >&2; exit 1; }

file=$(ls "$out"/callgrind.out.* | head -1)
ann=$(callgrind_annotate --inclusive=yes "$file" 2>/dev/null)
ir() { # inclusive Ir of the first function matching $1
    echo "$ann" | grep -E ":$1( |\$)" | head -1 | awk '{gsub(",","",$1); print $1}'
}
total=$(echo "$ann" | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
handle=$(ir fpx_server_handle)
search=$(ir fpx_engine_search)
broker=$(ir fpx_net_run)
n=300 # searches in the short round-trip workload, besides a handful of set-up requests
{
    echo "server instructions (callgrind), short round-trip workload: $n searches of 1 x 128, k=10,"
    echo "1,000-vector flat index, plus create/add/delete and start-up/shutdown"
    echo
    echo "| part | instructions | per search |"
    echo "|---|---:|---:|"
    echo "| whole server process | $total | - |"
    echo "| fpx_server_handle (all requests) | $handle | $((handle / n)) |"
    echo "| of which FAISS search (fpx_engine_search) | $search | $((search / n)) |"
    echo "| request handling without FAISS | $((handle - search)) | $(((handle - search) / n)) |"
    echo "| broker thread (fpx_net_run) | $broker | $((broker / n)) |"
} | tee "$out/profile.md"
echo "profile: $out/profile.md, $file" >&2
