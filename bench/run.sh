#!/usr/bin/env bash
# bench/run.sh - the benchmark suite: builds, runs fpx-bench, writes a table
# and a plot.
#
#   bench/run.sh           the full run (about 30 minutes on 2 cores), results
#                          in bench/results/: results.md and plot.png, and
#                          bench/large.py's real-size indexes in large/
#   bench/run.sh --short   seconds-long sizes, the same code paths (CI), results
#                          in build/bench-short/
#
# When build-avx2/ holds a server built against FAISS compiled for AVX2
# (make build-avx2), the same run is repeated with it, and with
# FPX_BENCH_PEER=/path/to/server against another server that speaks the
# shared protocol.md; all land in the table and the plot. See
# bench/README.md for what each figure means.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
args=()
if [ "${1:-}" = "--short" ]; then
    mode=short
    args+=(--short)
fi
out=bench/results
[ "$mode" = short ] && out=build/bench-short
mkdir -p "$out"

./scripts/deps.sh --with-bench
make build >/dev/null

run() { # label build-dir
    mkdir -p "$out/$1"
    "$2/bench/fpx-bench" --server "$2/faiss-proxy-server" --echo "$2/bench/fpx-echo" \
        --out "$out/$1" --label "$1" "${args[@]}"
}

labels=(debian-generic)
run debian-generic build
if [ -x build-avx2/faiss-proxy-server ] && [ -x build-avx2/bench/fpx-bench ]; then
    labels+=(avx2)
    run avx2 build-avx2
fi
# FPX_BENCH_PEER: another server speaking protocol.md, configured by the seed's
# environment variables; the same workloads run against it.
if [ -n "${FPX_BENCH_PEER:-}" ]; then
    labels+=(peer)
    mkdir -p "$out/peer"
    build/bench/fpx-bench --server "$FPX_BENCH_PEER" --peer --echo build/bench/fpx-echo \
        --out "$out/peer" --label "peer: $(basename "$FPX_BENCH_PEER")" "${args[@]}"
fi

# Indexes of the size users run (1M x 128 IVF-PQ, HNSW32): QPS at a recall,
# build time and memory, server over in-process (bench/large.py).
large=()
[ "$mode" = short ] && large=(--short)
/usr/bin/python3 bench/large.py --build build --out "$out/large" "${large[@]}"

{
    echo "# faiss-proxy benchmark results ($mode run)"
    echo
    echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB."
    echo "Every ratio compares two measurements of the same run; absolute figures are for context only."
    echo
    for l in "${labels[@]}"; do
        cat "$out/$l/results.md"
        echo
    done
    echo "![ratios](plot.png)"
    echo
    echo "## Indexes of the size users run (bench/large.py)"
    echo
    cat "$out/large/large.md"
    if [ -f "$out/large/large.png" ]; then echo "![QPS against recall](large/large.png)"; fi
} >"$out/results.md"

# One row per figure (in the order of the first run), one column per run.
files=() names=""
for l in "${labels[@]}"; do
    files+=("$out/$l/ratios.dat")
    names="$names $l"
done
awk -F'\t' -v runs="${#files[@]}" '
    FNR == 1 { f++; next }
    { if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1; target[$1] = $3 }
      v[$1, f] = $2 }
    END { for (i = 1; i <= n; i++) {
            k = order[i]; line = k "\t" target[k]
            for (j = 1; j <= runs; j++) line = line "\t" ((k, j) in v ? v[k, j] : "NaN")
            print line } }' "${files[@]}" >"$out/ratios.dat"
gnuplot -e "out='$out/plot.png'; data='$out/ratios.dat'; labels='${names# }'" bench/plot.gp
echo "bench: $out/results.md and $out/plot.png"
