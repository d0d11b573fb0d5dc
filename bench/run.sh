#!/usr/bin/env bash
# bench/run.sh - the benchmark suite: builds, runs fpx-bench, writes a table
# and a plot.
#
#   bench/run.sh           the full run (about 15 minutes on 2 cores), results
#                          in bench/results/: results.md and plot.png
#   bench/run.sh --short   seconds-long sizes, the same code paths (CI), results
#                          in build/bench-short/
#
# When build-avx2/ holds a server built against FAISS compiled for AVX2
# (make build-avx2), the same run is repeated with it and both land in the
# table and the plot. See bench/README.md for what each figure means.
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
} >"$out/results.md"

b="" lb=""
if [ "${#labels[@]}" -gt 1 ]; then
    b="$out/avx2/ratios.dat"
    lb="avx2"
fi
gnuplot -e "out='$out/plot.png'; a='$out/debian-generic/ratios.dat'; la='debian-generic'; b='$b'; lb='$lb'" \
    bench/plot.gp
echo "bench: $out/results.md and $out/plot.png"
