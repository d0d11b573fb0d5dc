#!/usr/bin/env bash
# faiss-avx2.sh - builds FAISS 1.7.3 for AVX2 from Debian's source package
# into a local prefix, outside the repository (make faiss-avx2).
#
# Why: Debian's libfaiss-dev is compiled for generic x86-64, so its distance
# kernels are the scalar reference loops (fvec_L2sqr_ref is most of a flat
# search, bench/profile.sh). FAISS's own option FAISS_OPT_LEVEL=avx2 builds,
# next to the generic libfaiss, a libfaiss_avx2 from the same sources with
# -mavx2 -mfma -mf16c -mpopcnt, and its CMake package (lib/cmake/faiss/
# faiss-config.cmake) exports both targets, faiss and faiss_avx2.
# `make build-avx2` configures the project with -DFPX_FAISS_PREFIX=<prefix>,
# which links faiss_avx2 (docs/faiss-avx2.md).
#
# Debian's source rather than upstream's: the same 1.7.3 and patches as the
# libfaiss-dev it is compared with, from the mirror apt already uses. None of
# Debian's patches touches x86 code; 0004 puts the CMake package in
# lib/cmake/faiss, where find_package looks under a prefix.
#
# Environment:
#   FPX_FAISS_AVX2_PREFIX  install prefix (~/.cache/faiss-proxy/faiss-1.7.3-avx2)
#   FPX_FAISS_AVX2_SRC     download and build folder (~/.cache/faiss-proxy/src)
# Both must be outside the repository's work tree. Needs root (or sudo) for
# apt-get. Idempotent: an installed prefix is kept; rm -rf it to rebuild.
# The prefix is the last line printed, for $(scripts/faiss-avx2.sh | tail -1).
set -euo pipefail

prefix=${FPX_FAISS_AVX2_PREFIX:-$HOME/.cache/faiss-proxy/faiss-1.7.3-avx2}
work=${FPX_FAISS_AVX2_SRC:-$HOME/.cache/faiss-proxy/src}
here=$(cd "$(dirname "$0")" && pwd)
top=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))

say() { echo "faiss-avx2: $*" >&2; }
die() {
    say "$*"
    exit 1
}

grep -qw avx2 /proc/cpuinfo ||
    die "this CPU has no AVX2 (no 'avx2' flag in /proc/cpuinfo); use the default build, Debian's generic FAISS"

# Absolute, symlinks resolved, whether or not the folder exists yet; nothing
# is created before both are known to be outside the repository.
prefix=$(realpath -m "$prefix")
work=$(realpath -m "$work")
top=$(realpath -m "$top")
for d in "$prefix" "$work"; do
    case "$d/" in
    "$top"/*) die "$d is inside the repository ($top); choose a folder outside it" ;;
    esac
done

if [ -f "$prefix/lib/libfaiss_avx2.so" ] && [ -f "$prefix/lib/cmake/faiss/faiss-config.cmake" ]; then
    say "already installed in $prefix (rm -rf it to rebuild)"
    echo "$prefix"
    exit 0
fi
[ -f "$prefix/lib/libfaiss_avx2.so" ] && say "$prefix has no CMake package (an older layout): rebuilding"

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    else
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) for: $*"
        sudo "$@"
    fi
}
export DEBIAN_FRONTEND=noninteractive

# Build tools only: no swig, python or CUDA (FAISS_ENABLE_PYTHON/GPU=OFF).
# libopenblas-dev gives FindBLAS and FindLAPACK their libraries; dpkg-dev
# has dpkg-source (apt-get source) and dpkg-buildflags.
as_root apt-get install -y -q --no-install-recommends cmake g++ make libopenblas-dev dpkg-dev >/dev/null

# --- source: the version of the installed libfaiss-dev, Debian's patches
# applied (scripts/faiss-source.sh adds a deb-src entry when apt has none)
mkdir -p "$prefix"
srcdir=$(FPX_FAISS_SRC_CACHE="$work" "$here/faiss-source.sh" | tail -1)

# FAISS 1.7.3 installs faiss_avx2 without "INCLUDES DESTINATION" (faiss has
# it), so the exported faiss_avx2 target carries no include directory and a
# consumer linking only it would not find <faiss/...>. Add it, once.
cml="$srcdir/faiss/CMakeLists.txt"
if ! grep -q 'faiss-proxy: INCLUDES' "$cml"; then
    # shellcheck disable=SC2016 # CMake's ${...}, not the shell's
    sed -i '/install(TARGETS faiss_avx2/,/^ *)/ s|^\( *\)LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}$|&\n\1INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} # faiss-proxy: INCLUDES|' "$cml"
    grep -q 'faiss-proxy: INCLUDES' "$cml" || die "could not add INCLUDES DESTINATION to faiss_avx2's install in $cml"
fi

# --- build: Debian's hardening flags (debian/rules: hardening=+all), with
# CMAKE_BUILD_TYPE=Release's -O3 -DNDEBUG rather than dh's -O2 -g. As dh's
# cmake build system does, CPPFLAGS go into CFLAGS/CXXFLAGS (CMake reads no
# CPPFLAGS). Run in the source folder, which its -ffile-prefix-map maps to
# "." (FAISS's exception messages carry __FILE__). Debian's other options
# (python, C API, gtest) are not needed.
eval "$(cd "$srcdir" && DEB_BUILD_MAINT_OPTIONS='hardening=+all' DEB_CFLAGS_MAINT_STRIP='-g -O2' \
    DEB_CXXFLAGS_MAINT_STRIP='-g -O2' dpkg-buildflags --export=sh)"
export CFLAGS="$CFLAGS $CPPFLAGS" CXXFLAGS="$CXXFLAGS $CPPFLAGS"

build="$work/faiss-1.7.3-build-avx2"
cmake -S "$srcdir" -B "$build" \
    -DFAISS_OPT_LEVEL=avx2 -DFAISS_ENABLE_GPU=OFF -DFAISS_ENABLE_PYTHON=OFF \
    -DFAISS_ENABLE_C_API=OFF -DBUILD_TESTING=OFF -DBUILD_SHARED_LIBS=ON \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib
# With FAISS_OPT_LEVEL=avx2 the install rules want both libraries: faiss
# (generic, same flags: a control for the AVX2 speed-up) and faiss_avx2.
# Only those two: the demos, benchs and tutorial are not needed.
cmake --build "$build" -j"$(nproc)" --target faiss faiss_avx2
cmake --install "$build"

[ -f "$prefix/lib/libfaiss_avx2.so" ] || die "the install gave no $prefix/lib/libfaiss_avx2.so"
grep -q 'add_library(faiss_avx2 SHARED IMPORTED)' "$prefix/lib/cmake/faiss/faiss-targets.cmake" ||
    die "$prefix/lib/cmake/faiss exports no faiss_avx2 target"
say "installed in $prefix: lib/libfaiss_avx2.so (CMake target faiss_avx2), lib/libfaiss.so (faiss), lib/cmake/faiss"
echo "$prefix"
