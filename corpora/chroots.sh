#!/usr/bin/env bash
# Builds (once) Debian chroots whose glibc differs from the host's, for the corpus programs:
#   bullseye = glibc 2.31, trixie = 2.41, sid = 2.43 (bookworm = 2.36 is the host).
# Usage: corpora/chroots.sh [SUITE...]   (default: bullseye trixie sid)
# The chroots are cached outside the repository in $HEAPWALK_CHROOT_CACHE
# (default /var/cache/heapwalk/chroots); a finished one has a .heapwalk-ready file.
# Each holds gcc + libc6-dev (to build the corpus programs against its own glibc) and libc6-dbg
# (its libc's debug symbols, for the with-symbols half of the tests). Needs root and network.
# The programs, their kernel cores and ground truth are made by tests/integration/test_versions.py
# (hwkit.ChrootCorpora) and cached in $HEAPWALK_CHROOT_CACHE/cores; see corpora/README.md.
set -euo pipefail
cache=${HEAPWALK_CHROOT_CACHE:-/var/cache/heapwalk/chroots}
mirror=${HEAPWALK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bullseye trixie sid)
command -v debootstrap >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
mkdir -p "$cache"
for suite in "${suites[@]}"; do
  root="$cache/$suite"
  if [ -f "$root/.heapwalk-ready" ]; then
    echo "$suite: cached at $root" >&2
    continue
  fi
  rm -rf "$root.tmp"
  echo "$suite: debootstrap into $root (a few minutes)" >&2
  debootstrap --variant=minbase --include=gcc,libc6-dev,libc6-dbg \
    "$suite" "$root.tmp" "$mirror" >"$cache/$suite.log" 2>&1 || {
    echo "$suite: debootstrap failed, see $cache/$suite.log" >&2
    tail -5 "$cache/$suite.log" >&2
    exit 1
  }
  chroot "$root.tmp" dpkg-query -W -f='${Version}\n' libc6 >"$root.tmp/.heapwalk-glibc"
  rm -rf "$root"
  mv "$root.tmp" "$root"
  touch "$root/.heapwalk-ready"
  echo "$suite: ready (glibc $(cat "$root/.heapwalk-glibc"))" >&2
done
