#!/bin/bash
# make fresh-check: prove the README's two commands on a fresh Debian 12.
#
# Builds a minimal bookworm root with mmdebstrap (--variant=apt, plus make
# and git; cached as a tarball between runs), clones the committed HEAD
# into it, mounts what the tests need (/proc, /sys, /dev, /dev/shm, and a
# tmpfs on /tmp, as many systems have), and runs inside it:
#   make check   -- its closing line is printed at the end
#   make run     -- until blockd prints that it is ready; then nbdinfo
#                   reads the demo export, and blockd is stopped by pid.
# Nothing the host has installed by hand can help: only what
# scripts/install-deps.sh installs is in the root.
#
# Needs root (chroot, mounts).  Environment:
#   FRESH_CACHE  where the root tarball is kept (/var/cache/blockd-fresh)
#   FRESH_KEEP=1 keep the unpacked root afterwards (for a look inside)
#   FRESH_CHECK_ARGS  passed to make in the root, e.g. FRESH_CHECK_ARGS=run
#                     skips 'make check' (a quick look at 'make run' only)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${FRESH_CACHE:-/var/cache/blockd-fresh}
tarball="$cache/bookworm-apt.tar"
mirrors=(
    "deb http://deb.debian.org/debian bookworm main"
    "deb http://deb.debian.org/debian bookworm-updates main"
    "deb http://deb.debian.org/debian-security bookworm-security main"
)

say() { echo "fresh-check: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "needs root (chroot and mounts)" >&2
    exit 1
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
    say "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap
fi

mkdir -p "$cache"
# A root older than a week is made again: it should be what a new user gets.
if [ -e "$tarball" ] && [ -n "$(find "$tarball" -mtime +7)" ]; then
    rm -f "$tarball"
fi
if [ ! -e "$tarball" ]; then
    say "building a minimal bookworm root (mmdebstrap --variant=apt)"
    mmdebstrap --quiet --variant=apt --format=tar --include=make,git,ca-certificates \
        bookworm "$tarball.part" "${mirrors[@]}"
    mv "$tarball.part" "$tarball"
fi

root=$(mktemp -d /var/tmp/blockd-fresh.XXXXXX)
demo_pid=""
cleanup() {
    if [ -n "$demo_pid" ]; then
        kill -- "-$demo_pid" 2>/dev/null || true
    fi
    # Anything the tests left running inside the root.
    for p in /proc/[0-9]*; do
        if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
    sleep 0.5
    for m in tmp dev/shm dev sys proc; do
        umount -R -l "$root/$m" 2>/dev/null || true
    done
    if [ "${FRESH_KEEP:-0}" = 1 ]; then
        say "root kept in $root"
    else
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT

tar -C "$root" -xf "$tarball"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"

# The committed HEAD, as a clone gives it (no work-tree changes).
say "cloning $(git -C "$top" rev-parse --short HEAD) into the root"
git clone --quiet --no-local "$top" "$root/root/blockd"
git -C "$root/root/blockd" checkout --quiet "$(git -C "$top" rev-parse HEAD)"

in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TERM=dumb LANG=C.UTF-8 /bin/sh -c "cd /root/blockd && $1"
}

check_line="(make check not run)"
status=0
if [ "${FRESH_CHECK_ARGS:-check}" != run ]; then
    say "make check (in the fresh root)"
    start=$(date +%s)
    clog="$root/root/check.log"
    if ! in_root "make check" 2>&1 | tee "$clog"; then
        status=1
    fi
    check_line=$(grep -E '^check: [0-9]+ passed, [0-9]+ failed' "$clog" | tail -1 || true)
    check_line="${check_line:-(no closing line)} in $(( $(date +%s) - start )) s"
fi

say "make run (in the fresh root)"
log="$root/root/run.log"
setsid chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb \
    /bin/sh -c 'cd /root/blockd && exec make run' >"$log" 2>&1 </dev/null &
demo_pid=$!
ready=0
for _ in $(seq 1 1200); do
    if grep -q ' ready (pid ' "$log"; then ready=1; break; fi
    if ! kill -0 "$demo_pid" 2>/dev/null; then break; fi
    sleep 0.5
done
cat "$log"
if [ "$ready" = 1 ]; then
    # The URI the demo printed, used as a newcomer would.
    uri=$(sed -n "s/.*nbdinfo --map '\([^']*\)'.*/\1/p" "$log" | head -1)
    if in_root "nbdinfo --map '$uri'"; then
        say "make run: ready, and its NBD export answers"
    else
        say "make run: ready, but nbdinfo --map '$uri' failed"
        status=1
    fi
else
    say "make run: blockd did not become ready"
    status=1
fi
kill -- "-$demo_pid" 2>/dev/null || true
wait "$demo_pid" 2>/dev/null || true
demo_pid=""

say "inside the fresh root: $check_line"
exit "$status"
