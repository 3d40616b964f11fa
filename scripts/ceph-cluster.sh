#!/bin/bash
# A throw-away single-node Ceph cluster on 127.0.0.1 for the rbd tests and
# benchmarks: one ceph-mon, one ceph-osd on the memstore object store (data
# in memory), no authentication, and a pool "rbd" of size 1.  Everything it
# has — ceph.conf, monmap, data, logs, pid files, admin sockets — lives
# under DIR, and stop tears it down by the pids in DIR/run (never by name).
#
#   scripts/ceph-cluster.sh start DIR      # prints DIR/ceph.conf when up
#   scripts/ceph-cluster.sh stop DIR       # kills mon and osd, by pid
#   scripts/ceph-cluster.sh stop-osd DIR   # only the osd (a cluster that
#                                          # stops serving I/O)
#
# memstore's own byte count drifts below zero once images are removed
# (Pacific), which reads as a full OSD: the failsafe then drops every
# write for seconds at a time.  fake_statfs_for_testing makes the OSD take
# its fullness from the pools' statistics instead.
# Clients use DIR/ceph.conf (rbd:rbd/IMG:conf=DIR/ceph.conf for qemu-img;
# conf=DIR/ceph.conf for driver=rbd).  The [client] section bounds how long
# a request waits for an OSD (rados_osd_op_timeout), so that an OSD that
# goes away fails requests instead of hanging them forever.
# Needs ceph-mon, ceph-osd and ceph-common (scripts/deps.sh).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|stop-osd DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
DIR=$2

# Kills the daemon whose pid file is DIR/run/NAME.pid and waits for it to
# go: TERM, then KILL after 10 s.  Nothing to do if it is not running.
kill_by_pidfile() {
    local pidfile="$DIR/run/$1.pid" pid i
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "ceph-cluster: pid $pid ($1) did not exit" >&2
    return 1
}

# Waits (up to $2 seconds) until "$1" (a command) succeeds.
wait_for() {
    local what=$1 deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        if eval "$what" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Runs "$@" (output to setup.log) until it succeeds, at most 5 times, a
# second apart.  In the first seconds of a new cluster the monitor now and
# then refuses a command ("Error EPERM: problem getting command
# descriptions from mon", or the osd's "wrong fsid") that goes through
# moments later; every command retried here is idempotent.
retry() {
    local tries=0
    until "$@" >>"$DIR/log/setup.log" 2>&1; do
        tries=$((tries + 1))
        if [ $tries -ge 5 ]; then
            return 1
        fi
        echo "ceph-cluster: retrying: $*" >>"$DIR/log/setup.log"
        sleep 1
    done
}

# A free TCP port on 127.0.0.1 (the kernel's choice).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local port fsid osd_uuid conf id
    for tool in ceph-mon ceph-osd ceph monmaptool rbd; do
        command -v "$tool" >/dev/null || {
            echo "ceph-cluster: $tool not installed (scripts/deps.sh)" >&2
            exit 1
        }
    done
    if [ -e "$DIR/run/mon.a.pid" ]; then
        echo "ceph-cluster: $DIR already has a running cluster" >&2
        exit 1
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    rm -rf "$DIR/mon.a" "$DIR/osd.0" "$DIR/run" "$DIR/log"
    mkdir -p "$DIR/mon.a" "$DIR/osd.0" "$DIR/run" "$DIR/log"
    port=$(free_port)
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    conf="$DIR/ceph.conf"
    cat > "$conf" <<EOF
[global]
fsid = $fsid
mon_host = v1:127.0.0.1:$port
mon_initial_members = a
ms_bind_msgr2 = false
ms_bind_ipv6 = false
public_addr = 127.0.0.1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $DIR/run
keyring = $DIR/keyring
crash_dir = $DIR/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
mon_data_avail_warn = 1
mon_data_avail_crit = 0

[mon]
mon_data = $DIR/mon.a
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$name.asok
log_file = $DIR/log/\$name.log

[osd]
osd_data = $DIR/osd.0
pid_file = $DIR/run/\$name.pid
admin_socket = $DIR/run/\$name.asok
log_file = $DIR/log/\$name.log
osd_objectstore = memstore
memstore_device_bytes = 4294967296
fake_statfs_for_testing = 4294967296
osd_max_object_name_len = 256
osd_max_object_namespace_len = 64
osd_heartbeat_grace = 5
osd_class_update_on_start = false

[client]
rados_osd_op_timeout = 10
rados_mon_op_timeout = 10
client_mount_timeout = 10
admin_socket =
log_file = $DIR/log/client.log
EOF
    touch "$DIR/keyring"
    # Whatever fails from here on leaves no daemon behind.
    trap 'echo "ceph-cluster: start failed (see $DIR/log): $(grep -v "^\$" "$DIR/log/setup.log" | tail -n 2)" >&2; kill_by_pidfile osd.0 || true; kill_by_pidfile mon.a || true' ERR
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$port]" \
        "$DIR/monmap" >"$DIR/log/setup.log" 2>&1
    ceph-mon -c "$conf" --mkfs -i a --monmap "$DIR/monmap" \
        >>"$DIR/log/setup.log" 2>&1
    # Daemonizes; the pid file appears once it runs.
    ceph-mon -c "$conf" -i a >>"$DIR/log/setup.log" 2>&1
    if ! wait_for "[ -s '$DIR/run/mon.a.pid' ] && ceph -c '$conf' --connect-timeout 2 mon stat" 20; then
        echo "ceph-cluster: ceph-mon did not come up (see $DIR/log)" >&2
        kill_by_pidfile mon.a || true
        exit 1
    fi
    # osd new with the same uuid gives the same id again.
    retry ceph -c "$conf" osd new "$osd_uuid"
    id=$(ceph -c "$conf" osd new "$osd_uuid" 2>>"$DIR/log/setup.log")
    ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" \
        >>"$DIR/log/setup.log" 2>&1
    # The osd's own first command may meet the same refusal ("wrong
    # fsid"); it exits (250) then.
    retry ceph-osd -c "$conf" -i "$id"
    retry ceph -c "$conf" osd pool create rbd 8 8
    retry ceph -c "$conf" osd pool set rbd size 1 --yes-i-really-mean-it
    # Writes the pool's first objects: done once the osd serves the pool
    # (the [client] timeouts bound it).
    if ! retry rbd -c "$conf" pool init rbd; then
        echo "ceph-cluster: the osd did not bring pool rbd up (see $DIR/log)" >&2
        kill_by_pidfile "osd.$id" || true
        kill_by_pidfile mon.a || true
        exit 1
    fi
    trap - ERR
    echo "$conf"
}

case "$cmd" in
start) start ;;
stop)
    rc=0
    kill_by_pidfile osd.0 || rc=1
    kill_by_pidfile mon.a || rc=1
    exit $rc
    ;;
stop-osd) kill_by_pidfile osd.0 ;;
*) usage ;;
esac
