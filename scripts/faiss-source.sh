#!/usr/bin/env bash
# faiss-source.sh - fetches Debian's source package of the installed FAISS
# (faiss=<libfaiss-dev's version>, Debian's patches applied) into a cache
# folder outside the repository, and prints the unpacked folder.
#
# Used by scripts/faiss-avx2.sh (which builds it for AVX2) and by
# scripts/faiss-suite.py (which runs its Python tests, tests/test_*.py and
# tutorial/python/, against the drop-in). Debian's source rather than
# upstream's: the same 1.7.3 and patches as the libfaiss-dev and
# python3-faiss installed here, from the mirror apt already uses.
#
# Environment:
#   FPX_FAISS_SRC_CACHE  the download folder (~/.cache/faiss-proxy/src); it
#                        must be outside the repository's work tree, or under
#                        its git-ignored build/ folder
# Needs root (or sudo) for apt-get when no deb-src entry exists yet.
# Idempotent: an unpacked source already in the cache is reused.
# The source folder is the last line printed, for $(scripts/faiss-source.sh | tail -1).
set -euo pipefail

work=${FPX_FAISS_SRC_CACHE:-$HOME/.cache/faiss-proxy/src}
here=$(cd "$(dirname "$0")" && pwd)
top=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))

say() { echo "faiss-source: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# Absolute, symlinks resolved, whether or not the folder exists yet; nothing
# is created before it is known to be outside what git tracks.
work=$(realpath -m "$work")
top=$(realpath -m "$top")
case "$work/" in
"$top"/build/*) ;;
"$top"/*) die "$work is inside the repository ($top); choose a folder outside it, or under build/" ;;
esac

srcdir="$work/faiss-1.7.3"
if [ -f "$srcdir/debian/rules" ]; then
    say "reusing $srcdir"
    echo "$srcdir"
    exit 0
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    else
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) for: $*"
        sudo "$@"
    fi
}
export DEBIAN_FRONTEND=noninteractive

# --- apt: a deb-src entry for the mirror and suites apt already uses --------
# A separate file, so that removing it undoes it; written only when no
# deb-src entry exists yet. deb822 (bookworm's debian.sources): the first
# stanza of Types deb that is not the security archive, its URIs, Suites,
# Components and Signed-By copied (continuation lines included). Classic
# one-line sources.list: its first such deb line, as deb-src.
src822=/etc/apt/sources.list.d/faiss-proxy-src.sources
srclist=/etc/apt/sources.list.d/faiss-proxy-src.list
has_deb_src() {
    # what apt reads: *.list and *.sources (not e.g. *.disabled)
    grep -qsE '^[[:space:]]*deb-src[[:space:]]|^Types:.*\<deb-src\>' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}
added=0
if ! has_deb_src; then
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        entry=$(awk '
            function flush() {
                if (!done && isdeb && !security && stanza != "") { printf "%s", stanza; done = 1 }
                stanza = ""; isdeb = 0; security = 0; keep = 0
            }
            /^[[:space:]]*$/ { flush(); next }
            /^#/ { next }
            /^[^[:space:]]/ {
                keep = 0
                if ($1 == "Types:") { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1; next }
                if ($1 == "Suites:" && $0 ~ /-security/) security = 1
                if ($1 ~ /^(URIs|Suites|Components|Signed-By):$/) keep = 1
            }
            keep { stanza = stanza $0 "\n" }
            END { flush() }' /etc/apt/sources.list.d/debian.sources)
        [ -n "$entry" ] || die "no deb entry found in /etc/apt/sources.list.d/debian.sources"
        printf '# faiss-proxy (scripts/faiss-source.sh): Debian sources, for apt-get source faiss\nTypes: deb-src\n%s\n' \
            "$entry" | as_root tee "$src822" >/dev/null
        say "added $src822"
    elif [ -f /etc/apt/sources.list ]; then
        line=$(grep -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list | grep -v -- '-security' | head -1 || true)
        [ -n "$line" ] || die "no deb line found in /etc/apt/sources.list"
        printf '# faiss-proxy (scripts/faiss-source.sh): Debian sources, for apt-get source faiss\n%s\n' \
            "$(sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' <<<"$line")" | as_root tee "$srclist" >/dev/null
        say "added $srclist"
    else
        die "no apt sources found to derive a deb-src entry from"
    fi
    added=1
fi
# apt-get update only for a new entry, or when apt still knows no source
# package faiss (an entry added by hand, or a run stopped before its update).
if [ "$added" = 1 ] || ! apt-cache showsrc faiss 2>/dev/null | grep -q '^Package: faiss$'; then
    as_root apt-get update -q
fi
# dpkg-source (dpkg-dev) unpacks the package and applies Debian's patches.
command -v dpkg-source >/dev/null 2>&1 ||
    as_root apt-get install -y -q --no-install-recommends dpkg-dev >/dev/null

# --- source: the version of the installed libfaiss-dev ----------------------
ver=$(dpkg-query -W -f='${source:Version}' libfaiss-dev 2>/dev/null || true)
case "$ver" in
1.7.3*) spec="faiss=$ver" ;;
*) spec=faiss ;;
esac
mkdir -p "$work"
# As root apt warns that the download is unsandboxed: harmless here.
(cd "$work" && apt-get source -q "$spec" >&2)
[ -f "$srcdir/debian/rules" ] ||
    die "apt-get source $spec gave no $srcdir (apt's faiss is not 1.7.3?): $(ls "$work")"
say "unpacked in $srcdir"
echo "$srcdir"
