#!/bin/sh
# deps.sh - installs the Debian packages faiss-proxy needs, and only those missing.
#
# Called by `make`, `make run` and `make test` so that a fresh Debian machine
# needs nothing by hand. Set FPX_SKIP_DEPS=1 to skip (e.g. inside a prepared image).
set -eu

[ "${FPX_SKIP_DEPS:-0}" = 1 ] && exit 0

PKGS="build-essential cmake pkg-config libfaiss-dev libopenblas-dev libzmq3-dev libmsgpack-dev
libsodium-dev libmicrohttpd-dev libjansson-dev zlib1g-dev libnats-dev nats-server python3 python3-numpy python3-zmq python3-msgpack python3-faiss python3-pytest"
for opt in "$@"; do
    case "$opt" in
    --with-clang) PKGS="$PKGS clang libclang-rt-14-dev" ;;
    --with-bench) PKGS="$PKGS gnuplot-nox" ;;
    # promtool and a real scraper for the metrics tests; pip and venv for the install test;
    # pytest-xdist runs the integration tests two at a time (make test)
    --with-test) PKGS="$PKGS python3-pytest-xdist prometheus python3-pip python3-venv python3-setuptools binutils man-db" ;;
    # FAISS's own Python tests (make faiss-suite): scipy for two of their files,
    # dpkg-dev's dpkg-source for apt-get source.
    --with-faiss-suite) PKGS="$PKGS python3-scipy dpkg-dev" ;;
    *) echo "deps: unknown option $opt" >&2; exit 2 ;;
    esac
done

missing=""
for p in $PKGS; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in
    *"install ok installed"*) ;;
    *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0

echo "deps: installing missing Debian packages:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "deps: need root (or sudo) to install:$missing" >&2
        exit 1
    }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
