#!/bin/sh
# Install what blockd needs to build, test and benchmark, on Debian 12.
# Idempotent: asks apt only for packages that are missing, and runs
# 'apt-get update' once, only if something must be installed.
set -eu

PACKAGES="
meson ninja-build gcc clang clang-19 pkg-config
liburing-dev libaio-dev libjson-c-dev libcmocka-dev zlib1g-dev
python3-pytest python3-libnbd
qemu-utils qemu-system-common libnbd-bin nbdkit fio
"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-deps: need root (or sudo) to install:$missing" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
