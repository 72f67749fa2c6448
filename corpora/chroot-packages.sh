#!/usr/bin/env bash
# Installs extra Debian packages into a chroot made by corpora/chroots.sh, once.
# Usage: corpora/chroot-packages.sh SUITE PACKAGE...
# Opt-in: chroots.sh's own package list (and so the cache keys of the cores made in its chroots)
# is unchanged; a test kit that needs more (tests/integration/chrootjdk.py: openjdk-21 in trixie, openjdk-11 in bullseye) calls this.
# A finished install leaves $ROOT/.heapwalk-pkgs-<sha of the sorted package list>; the script
# returns at once when it exists. apt-get runs in the chroot with /proc mounted and the host's
# resolv.conf copied in; /proc is unmounted on exit, whatever happens. Needs root and network.
set -euo pipefail
cache=${HEAPWALK_CHROOT_CACHE:-/var/cache/heapwalk/chroots}
suite=${1:?usage: chroot-packages.sh SUITE PACKAGE...}
shift
[ $# -gt 0 ] || { echo "no packages given" >&2; exit 2; }
root="$cache/$suite"
[ -f "$root/.heapwalk-ready" ] || { echo "$root is not a finished chroot (corpora/chroots.sh $suite)" >&2; exit 1; }
sum=$(printf '%s\n' "$@" | sort -u | sha256sum | cut -c1-16)
marker="$root/.heapwalk-pkgs-$sum"
if [ -f "$marker" ]; then
  echo "$suite: $* already installed" >&2
  exit 0
fi
log="$cache/$suite-pkgs-$sum.log"
mounted=""
cleanup() { [ -z "$mounted" ] || umount "$root/proc" 2>/dev/null || umount -l "$root/proc" 2>/dev/null || true; }
trap cleanup EXIT
if ! mountpoint -q "$root/proc"; then
  mount -t proc proc "$root/proc"
  mounted=1
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
echo "$suite: apt-get install $* (log: $log)" >&2
{
  chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update &&
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" &&
    chroot "$root" apt-get clean
} >"$log" 2>&1 || {
  echo "$suite: apt-get install $* failed, see $log" >&2
  tail -15 "$log" >&2
  exit 1
}
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' "$@" >"$marker"
echo "$suite: installed $(tr '\n' ' ' <"$marker")" >&2
