#!/bin/sh
# Stop the cluster that start-cluster.sh started in DIR: each daemon by
# the process id in its pid file, SIGTERM first, SIGKILL after 10 seconds.
#
#   stop-cluster.sh DIR
set -u

dir=$(cd "$1" && pwd)
for name in osd mon; do
    pidfile="$dir/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # Only a Ceph daemon of this cluster: a stale pid may be anything now.
    case "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" in
        *"ceph-$name -c $dir/ceph.conf"*) ;;
        *) continue ;;
    esac
    kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$pidfile"
done
exit 0
