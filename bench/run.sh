#!/bin/sh
# make bench: micro-benchmarks of the foundation and the block layer, and
# the same 4 KiB random-read workload through blockd and through fio on one
# file, with the ratio; then the NBD benchmarks against qemu-storage-daemon
# and nbdkit on a raw image (nbd-bench.py) and on qcow2 (qcow2-bench.py),
# and the jobs (mirror, chain, backup-bench.py).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
b="$top/build/bench"
seconds=${BENCH_SECONDS:-5}

echo "== event loop and coroutines"
"$b/bench-coroutine"
"$b/bench-bh-latency"
"$b/bench-graph-lock"

echo "== block layer: 4k random reads, 1 iothread, depth 32"
"$b/bench-block" null "$seconds" 32

img=/dev/shm/blockd-bench.img
if [ ! -e "$img" ]; then
    dd if=/dev/urandom of="$img" bs=1M count=1024 status=none
fi
ours=$("$b/bench-block" file "$img" "$seconds" 32)
echo "$ours"
fio_iops=$(fio --name=randread --filename="$img" --rw=randread --bs=4k --iodepth=32 \
               --ioengine=io_uring --runtime="$seconds" --time_based --numjobs=1 \
               --output-format=terse 2>/dev/null | awk -F';' '{print $8}')
echo "fio io_uring 4k randread, depth 32, same file: $fio_iops IOPS"
ours_iops=$(echo "$ours" | sed -n 's/.*: \([0-9]*\) IOPS.*/\1/p')
echo "ratio blockd / fio: $(awk -v a="$ours_iops" -v b="$fio_iops" 'BEGIN { printf "%.2f", a / b }')"
rm -f "$img"
echo "== NBD: blockd vs qemu-storage-daemon vs nbdkit (fio --ioengine=nbd, nbdcopy)"
/usr/bin/python3 "$top/bench/nbd-bench.py" "$seconds"
echo "== NBD over TLS: blockd vs qemu-storage-daemon (4k random, 1M sequential reads)"
/usr/bin/python3 "$top/bench/tls-bench.py" "$seconds"
echo "== LUKS over NBD: blockd vs qemu-storage-daemon (4k random, 1M sequential)"
/usr/bin/python3 "$top/bench/luks-bench.py" "$seconds"
echo "== nbd driver: 1 GiB held by nbdkit mirrored to a local file, blockd vs qemu-storage-daemon"
/usr/bin/python3 "$top/bench/nbd-mirror-bench.py" 3
echo "== mirror: 1 GiB on /dev/shm to READY, blockd vs qemu-storage-daemon vs cp"
/usr/bin/python3 "$top/bench/mirror-bench.py" 3
echo "== qcow2 over NBD: blockd vs qemu-storage-daemon (allocating 4k writes, 4k reads)"
/usr/bin/python3 "$top/bench/qcow2-bench.py" "$seconds"
echo "== image chains: 1 GiB active commit and stream on /dev/shm, blockd vs qemu-storage-daemon"
/usr/bin/python3 "$top/bench/chain-bench.py" 3
echo "== vhost-user-blk and FUSE exports: blockd vs qemu-storage-daemon vs fio on the file"
/usr/bin/python3 "$top/bench/vhost-user-bench.py" "$seconds"
echo "== dirty bitmaps: incremental backup of 1 GiB with 1 % dirty, bitmap cost on 4k writes"
/usr/bin/python3 "$top/bench/backup-bench.py" 5 "$seconds"
echo "== RBD over NBD on a one-node Ceph cluster: blockd vs qemu-storage-daemon vs rbd bench"
/usr/bin/python3 "$top/bench/rbd-bench.py" "$seconds"
