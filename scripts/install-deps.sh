#!/bin/sh
# Install what blockd needs to build, test and benchmark, on Debian 12,
# then prove that it works: each compiler builds and links with the flags
# of its build variant, each tool the tests use runs, and Python imports
# what the tests import.  A missing piece stops with one line naming the
# Debian package to install.
#
# Idempotent: asks apt only for packages that are missing, and runs
# 'apt-get update' once, only if something must be installed.
set -eu

# Build: compilers, sanitizer runtimes, libraries.
# FUSE export: libfuse3, and fusermount3 (tests unmount what a killed
# daemon left mounted).
# The VM tests: qemu-system-x86_64 and a static busybox for the guest's
# initramfs (its kernel is fetched with 'apt-get download' below, never
# installed on this machine).
# Tests: cmocka, pytest (and pytest-xdist: make check runs the functional
# tests two files at a time) and libnbd's Python binding; the peers
# (qemu-storage-daemon, qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh, nbdkit,
# fio) and 'file', which nbdinfo runs to fill its "content" field;
# certtool and psktool (gnutls-bin) make the TLS tests' certificates and
# keys.
# The rbd driver: librbd and librados; its tests start a one-node Ceph
# cluster (ceph-mon, ceph-osd, and ceph-common's ceph and rbd tools), and
# qemu-block-extra gives qemu-storage-daemon and qemu-img their rbd driver.
PACKAGES="
make meson ninja-build pkg-config gcc libc6-dev clang-19 libclang-rt-19-dev
liburing-dev libaio-dev libjson-c-dev libcmocka-dev zlib1g-dev libzstd-dev
libgnutls28-dev gnutls-bin libfuse3-dev fuse3 librbd-dev librados-dev
ceph-mon ceph-osd ceph-common qemu-block-extra
python3 python3-pytest python3-pytest-xdist python3-libnbd
qemu-utils qemu-system-common qemu-system-x86 busybox-static libnbd-bin nbdkit fio file
coreutils util-linux mount procps
"

say() { echo "install-deps: $*" >&2; }

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -n "$missing" ]; then
    say "installing:$missing"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            say "need root (or sudo) to install:$missing"
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# ---- capabilities -------------------------------------------------------
# A package can be installed and still not do the job (a runtime split
# into another package, a tool that needs a helper); check what we use.

fail() {
    say "missing: $1 (apt-get install $2)"
    exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/t.c" <<'EOF'
#include <pthread.h>
#include <stdio.h>
static void *run(void *p) { return p; }
int main(void)
{
    pthread_t t;
    pthread_create(&t, NULL, run, NULL);
    pthread_join(t, NULL);
    printf("ok\n");
    return 0;
}
EOF

# cc_works PACKAGE CC FLAGS...: CC compiles, links and runs t.c with FLAGS.
cc_works() {
    pkg=$1 cc=$2
    shift 2
    command -v "$cc" >/dev/null 2>&1 || fail "$cc" "$pkg"
    if ! "$cc" "$@" -pthread -o "$tmp/t" "$tmp/t.c" >"$tmp/cc.log" 2>&1 ||
       [ "$("$tmp/t" 2>&1)" != ok ]; then
        sed 's/^/    /' "$tmp/cc.log" | head -5 >&2
        fail "$cc $* cannot build a program" "$pkg"
    fi
}

cc_works gcc gcc -O2
cc_works gcc gcc -fsanitize=address,undefined
cc_works clang-19 clang-19 -O2
cc_works libclang-rt-19-dev clang-19 -fsanitize=thread
cc_works libclang-rt-19-dev clang-19 -fsanitize=address,undefined

# tool_runs PACKAGE COMMAND...: COMMAND exits 0.
tool_runs() {
    pkg=$1
    shift
    "$@" >/dev/null 2>&1 || fail "'$*' does not run" "$pkg"
}

tool_runs meson meson --version
tool_runs ninja-build ninja --version
tool_runs make make --version
tool_runs mount mount --version
tool_runs mount umount --version
tool_runs pkg-config pkg-config --exists liburing
tool_runs liburing-dev pkg-config --exists liburing
tool_runs libjson-c-dev pkg-config --exists json-c
tool_runs zlib1g-dev pkg-config --exists zlib
tool_runs libzstd-dev pkg-config --exists libzstd
tool_runs libcmocka-dev pkg-config --exists cmocka
tool_runs libgnutls28-dev pkg-config --exists gnutls
tool_runs libfuse3-dev pkg-config --exists fuse3
tool_runs gnutls-bin certtool --version
tool_runs gnutls-bin psktool --version
tool_runs fuse3 fusermount3 --version
tool_runs libaio-dev test -e /usr/include/libaio.h
tool_runs librbd-dev test -e /usr/include/rbd/librbd.h
tool_runs librados-dev test -e /usr/include/rados/librados.h
tool_runs ceph-mon ceph-mon --version
tool_runs ceph-osd ceph-osd --version
tool_runs ceph-common ceph --version
tool_runs ceph-common rbd --version
tool_runs ceph-mon monmaptool --help
tool_runs qemu-system-common qemu-storage-daemon --version
tool_runs qemu-utils qemu-img --version
tool_runs qemu-utils qemu-io --version
tool_runs libnbd-bin nbdinfo --version
tool_runs libnbd-bin nbdcopy --version
# nbdsh runs "python3 -m nbd": Debian's python3, as the tests run it.
tool_runs python3-libnbd env PATH="/usr/bin:$PATH" nbdsh --version
tool_runs nbdkit nbdkit --version
tool_runs nbdkit nbdkit file --version
tool_runs fio fio --version
tool_runs file file --version
tool_runs python3-pytest /usr/bin/python3 -m pytest --version
tool_runs python3-libnbd /usr/bin/python3 -c 'import nbd'
tool_runs python3-pytest-xdist /usr/bin/python3 -c 'import xdist'

tool_runs qemu-system-x86 qemu-system-x86_64 --version
tool_runs busybox-static busybox true

# qemu-img's rbd driver is a module of its own (qemu-block-extra).
if ! qemu-img --help 2>/dev/null | grep -q 'Supported formats:.* rbd'; then
    fail "qemu-img has no rbd driver" "qemu-block-extra"
fi

# nbdinfo's "content" comes from file(1): without it the JSON is garbage.
truncate -s 1M "$tmp/x.img"
if ! nbdinfo --json -- [ nbdkit file "$tmp/x.img" ] 2>/dev/null |
        /usr/bin/python3 -c 'import json, sys; json.load(sys.stdin)' 2>/dev/null; then
    fail "nbdinfo --json does not print valid JSON" "file"
fi

# The VM tests' guest (Debian's kernel and a busybox initramfs), built
# once into the cache the tests use, so that make check needs no network.
guest_cache=${BLOCKD_GUEST_CACHE:-/var/tmp/blockd-guest}
if ! "$(dirname "$0")/../tests/vm/make-guest.sh" "$guest_cache"; then
    say "cannot build the VM tests' guest in $guest_cache (see above)"
    exit 1
fi
exit 0
