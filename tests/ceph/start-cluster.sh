#!/bin/sh
# Start a one-node Ceph cluster on the loopback address in DIR: one
# ceph-mon, one ceph-osd on the memstore object store (data in memory),
# authentication off, pools of one replica, and a pool "rbd".
#
#   start-cluster.sh DIR
#
# Writes DIR/ceph.conf (what clients pass as conf=), DIR/mon.pid and
# DIR/osd.pid; stop it with stop-cluster.sh DIR.  Nothing outside DIR is
# touched: every path the daemons use (data, logs, sockets, keyrings)
# is under it.  Exits non-zero, with the daemon's log tail, if the
# cluster does not come up in 60 seconds.
set -eu

dir=$(cd "$1" && pwd)
here=$(dirname "$0")
mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"

# A free port for the monitor: ask the kernel for one.
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fsid=$(cat /proc/sys/kernel/random/uuid)

cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$port
public addr = 127.0.0.1
ms bind msgr2 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 2147483648
run dir = $dir/run
log file = $dir/log/\$name.log
keyring = $dir/keyring
mon data = $dir/mon/\$name
osd data = $dir/osd/\$name
mon cluster log file = $dir/log/cluster.log
pid file = $dir/\$type.pid
osd max object name len = 256
osd max object namespace len = 64
mon osd full ratio = 0.95
debug ms = 0
# A client that dies loses its watches, and so its image locks, in 5 s
# rather than 30.
osd client watch timeout = 5
osd crush update on start = false
osd class update on start = false
# A stopped OSD saves its memstore and finds its data again on restart.
osd fast shutdown = false

[mon]
admin socket = $dir/run/\$name.asok
[osd]
admin socket = $dir/run/\$name.asok
[client]
# Clients (blockd, qemu-storage-daemon, the rbd tool) run side by side.
log file = $dir/log/\$name.\$pid.log
CONF
: >"$dir/keyring"
conf="$dir/ceph.conf"

monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$port]" \
    "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >"$dir/log/mkfs-mon.out" 2>&1
ceph-mon -c "$conf" -i a
# The OSD's own id, given to the monitor and to the OSD alike.
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
ceph -c "$conf" --connect-timeout 30 osd create "$osd_uuid" 0 >/dev/null
# Placed here rather than by the OSD as it starts: an OSD that starts
# right after its monitor may ask before it knows the cluster's id, and
# is refused.
ceph -c "$conf" osd crush add osd.0 1.0 host=localhost root=default >/dev/null 2>&1
mkdir -p "$dir/osd/osd.0"
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/mkfs-osd.out" 2>&1
ceph-osd -c "$conf" -i 0

# Wait for the OSD to be up and in, then make the pool.
i=0
until ceph -c "$conf" osd dump 2>/dev/null | grep -q '^osd.0 up *in'; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
        echo "start-cluster: osd.0 did not come up" >&2
        tail -20 "$dir/log/osd.0.log" >&2 || true
        exit 1
    fi
    sleep 0.5
done
ceph -c "$conf" osd pool create rbd 8 8 >/dev/null 2>&1
rbd -c "$conf" pool init rbd
