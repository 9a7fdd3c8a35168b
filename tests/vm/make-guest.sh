#!/bin/sh
# make-guest.sh DIR - a small Linux guest for the VM tests, in DIR:
#   DIR/vmlinuz        Debian's kernel (package linux-image-amd64's)
#   DIR/base.cpio.gz   an initramfs: busybox-static, and the kernel modules
#                      a virtio-blk disk and an ext4 file system need
# The tests append their own /init as a second archive (the kernel unpacks
# concatenated archives in order).
#
# The kernel is fetched with 'apt-get download' and unpacked with
# dpkg-deb, so nothing is installed on the host.  Idempotent: DIR is kept
# once complete.
set -eu

dir=$1
[ -f "$dir/complete" ] && exit 0
say() { echo "make-guest: $*" >&2; }

command -v busybox >/dev/null || { say "missing busybox (apt-get install busybox-static)"; exit 1; }
busybox=$(command -v busybox)
file -L "$busybox" 2>/dev/null | grep -q "statically linked" ||
    { say "$busybox is not static (apt-get install busybox-static)"; exit 1; }

mkdir -p "$dir"
work=$(mktemp -d "$dir/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The kernel package linux-image-amd64 points at today.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
[ -n "$pkg" ] || { say "apt-cache knows no linux-image-amd64 (apt-get update?)"; exit 1; }
deb=$(ls "$dir"/"$pkg"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
    say "fetching $pkg"
    (cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
        { say "apt-get download $pkg failed"; exit 1; }
    mv "$work"/"$pkg"_*.deb "$dir"/
    deb=$(ls "$dir"/"$pkg"_*.deb | head -1)
fi
dpkg-deb -x "$deb" "$work/k"
kver=$(ls "$work/k/lib/modules" | head -1)
mods="$work/k/lib/modules/$kver/kernel"

root="$work/root"
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/mnt" "$root/modules"
cp "$busybox" "$root/bin/busybox"
# In load order: virtio transport, the block driver, then ext4's stack.
n=0
for m in drivers/virtio/virtio drivers/virtio/virtio_ring \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci drivers/block/virtio_blk lib/crc16 \
         crypto/crc32c_generic lib/libcrc32c fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4; do
    f="$mods/$m.ko"
    [ -f "$f" ] || { say "module $m missing in $pkg"; exit 1; }
    n=$((n + 1))
    cp "$f" "$root/modules/$(printf %02d $n)-$(basename "$f")"
done
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$work/base.cpio.gz"
cp "$work/k/boot/vmlinuz-$kver" "$dir/vmlinuz"
mv "$work/base.cpio.gz" "$dir/base.cpio.gz"
echo "$pkg" > "$dir/complete"
