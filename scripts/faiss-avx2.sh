#!/usr/bin/env bash
# faiss-avx2.sh - builds FAISS 1.7.3 for AVX2 from Debian's source package
# into a local prefix, outside the repository (make faiss-avx2).
#
# Debian's libfaiss-dev is compiled for generic x86-64: no SIMD distance
# kernels (a flat search spends most of its time in fvec_L2sqr_ref). FAISS's
# own build option FAISS_OPT_LEVEL=avx2 compiles them with AVX2/FMA. The
# result goes to $FPX_FAISS_AVX2_PREFIX (default ~/.cache/faiss-proxy/
# faiss-1.7.3-avx2); `make build-avx2` then builds the project against it in
# build-avx2/, and bench/run.sh measures both builds.
#
# Needs root for apt-get (a deb-src entry for the machine's own mirror and
# suite, and the build tools). Idempotent: an existing prefix is kept.
set -euo pipefail

prefix=${FPX_FAISS_AVX2_PREFIX:-$HOME/.cache/faiss-proxy/faiss-1.7.3-avx2}
work=${FPX_FAISS_AVX2_SRC:-$HOME/.cache/faiss-proxy/src}
repo=$(cd "$(dirname "$0")/.." && pwd)

grep -qw avx2 /proc/cpuinfo || {
    echo "faiss-avx2: this CPU has no AVX2; the generic build is the one to use" >&2
    exit 1
}
for d in "$prefix" "$work"; do
    mkdir -p "$d"
    case "$(cd "$d" && pwd)/" in
    "$repo"/*)
        echo "faiss-avx2: $d is inside the repository; choose a folder outside it" >&2
        exit 1
        ;;
    esac
done
if [ -f "$prefix/lib/libfaiss_avx2.so" ] && [ -f "$prefix/include/faiss/Index.h" ]; then
    echo "faiss-avx2: already built in $prefix"
    exit 0
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

# deb-src for the mirror and suites apt already uses (deb822 or one-line format).
src=/etc/apt/sources.list.d/faiss-proxy-src.sources
if [ ! -f "$src" ] && ! grep -rqs '^deb-src\|^Types:.*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        awk 'BEGIN{RS=""; ORS="\n\n"} /Types:[^\n]*deb/ && !/security/ {sub(/Types:[^\n]*/, "Types: deb-src"); print; exit}' \
            /etc/apt/sources.list.d/debian.sources | $SUDO tee "$src" >/dev/null
    else
        grep -h '^deb ' /etc/apt/sources.list | grep -v security | head -1 | sed 's/^deb /deb-src /' |
            $SUDO tee /etc/apt/sources.list.d/faiss-proxy-src.list >/dev/null
    fi
    $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends cmake g++ make libopenblas-dev dpkg-dev >/dev/null

cd "$work"
if ! ls -d faiss-1.7.3* >/dev/null 2>&1; then
    apt-get source -q faiss
fi
srcdir=$(ls -d "$work"/faiss-1.7.3*/ | head -1)
build="$work/build-avx2"
cmake -S "$srcdir" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFAISS_OPT_LEVEL=avx2 \
    -DFAISS_ENABLE_GPU=OFF -DFAISS_ENABLE_PYTHON=OFF -DFAISS_ENABLE_C_API=OFF \
    -DBUILD_TESTING=OFF -DBUILD_SHARED_LIBS=ON -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$build" -j"$(nproc)" --target faiss_avx2
# Only the AVX2 library is built, so install by hand: the library and the
# headers (FAISS's install rule wants the generic library too).
mkdir -p "$prefix/lib" "$prefix/include"
cp "$build/faiss/libfaiss_avx2.so" "$prefix/lib/"
(cd "$srcdir" && find faiss -name '*.h' -exec install -D -m 644 {} "$prefix/include/{}" \;)
echo "faiss-avx2: installed in $prefix"
