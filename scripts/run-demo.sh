#!/bin/sh
# make run: start blockd in the foreground on a demo image.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$top/demo"
img="$top/demo/demo.raw"
if [ ! -e "$img" ]; then
    truncate -s 1G "$img"
    echo "run-demo: created sparse demo image $img (1 GiB)"
fi
echo "run-demo: starting blockd (Ctrl-C to stop)"
exec "$top/build/src/blockd" "$@"
