#!/bin/sh
# make run: start blockd in the foreground on a demo image, with a QMP
# monitor on demo/qmp.sock and the image served over NBD on demo/nbd.sock.
# Ctrl-C stops it.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$top/demo"
img="$top/demo/demo.raw"
sock="$top/demo/qmp.sock"
nbd="$top/demo/nbd.sock"
if [ ! -e "$img" ]; then
    truncate -s 1G "$img"
    echo "run-demo: created sparse demo image $img (1 GiB)"
fi
echo "run-demo: QMP on $sock (try: scripts/qmp-shell.py $sock query-named-block-nodes)"
echo "run-demo: NBD on $nbd (try: nbdinfo --map 'nbd+unix:///demo?socket=$nbd')"
echo "run-demo: starting blockd (Ctrl-C to stop)"
exec "$top/build/src/blockd" \
    --blockdev "driver=file,node-name=demo-file,filename=$img" \
    --blockdev driver=raw,node-name=demo,file=demo-file \
    --nbd-server "addr.type=unix,addr.path=$nbd" \
    --export type=nbd,id=demo,node-name=demo,writable=on \
    --chardev "socket,id=qmp,path=$sock,server=on,wait=off" \
    --monitor qmp \
    "$@"
