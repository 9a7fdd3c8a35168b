#!/bin/sh
# make bench: micro-benchmarks of the foundation.  The I/O benchmarks
# against qemu-storage-daemon (fio, nbdcopy) join here with the NBD export.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
b="$top/build/bench"
echo "== event loop and coroutines"
"$b/bench-coroutine"
"$b/bench-bh-latency"
"$b/bench-graph-lock"
