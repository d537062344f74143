#!/bin/bash
# A single-node SLURM cluster on this machine, for trying the launcher's SLURM backend (and for its test):
# munged, slurmctld and slurmd on localhost, one node with this machine's CPUs, one partition "debug".
# Usage: bash scripts/slurm_localhost.sh start STATE_DIR   (prints "export SLURM_CONF=..." on success)
#        bash scripts/slurm_localhost.sh stop STATE_DIR
# Needs root and Debian's slurm-wlm and munge packages; with INSTALL=1 it installs them with apt-get first.
# The daemons keep their state, logs and configuration in STATE_DIR and nowhere else (besides munge's key).
set -euo pipefail

command=${1:-}
state=${2:-}
if [ -z "$command" ] || [ -z "$state" ]; then
    echo "usage: $0 start|stop STATE_DIR" >&2
    exit 2
fi
state=$(mkdir -p "$state" && cd "$state" && pwd)
conf=$state/slurm.conf

stop() {
    for daemon in slurmd slurmctld; do
        if [ -f "$state/$daemon.pid" ]; then
            kill "$(cat "$state/$daemon.pid")" 2>/dev/null || true
            rm -f "$state/$daemon.pid"
        fi
    done
}

if [ "$command" = stop ]; then
    stop
    exit 0
fi
if [ "$command" != start ]; then
    echo "error: unknown command '$command' (start or stop)" >&2
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [ "${INSTALL:-0}" = 1 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$state/apt.log" 2>&1 || {
            echo "error: apt-get install slurm-wlm munge failed (see $state/apt.log)" >&2; exit 3; }
    else
        echo "error: SLURM is not installed (Debian: apt-get install slurm-wlm munge, or INSTALL=1 $0 start ...)" >&2
        exit 3
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: starting slurmctld, slurmd and munged as configured here needs root" >&2
    exit 3
fi

# munge authenticates the daemons to each other; one munged per machine serves them all.
if ! munge -n >/dev/null 2>&1; then
    mkdir -p /run/munge
    [ -f /etc/munge/munge.key ] || { echo "error: /etc/munge/munge.key is missing (reinstall munge)" >&2; exit 3; }
    munged --force >"$state/munged.out" 2>&1 || { echo "error: munged did not start (see $state/munged.out)" >&2; exit 3; }
fi

host=$(hostname)
node=$(slurmd -C | head -1)  # this machine as slurmd sees it: NodeName=<host> CPUs=... RealMemory=...
mkdir -p "$state/ctld" "$state/spool"
cat >"$conf" <<EOF
ClusterName=localhost
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

stop
export SLURM_CONF=$conf
slurmctld -c -f "$conf" || { echo "error: slurmctld did not start (see $state/slurmctld.log)" >&2; exit 3; }
slurmd -f "$conf" || { echo "error: slurmd did not start (see $state/slurmd.log)" >&2; exit 3; }
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "export SLURM_CONF=$conf"
        exit 0
    fi
    sleep 1
done
echo "error: the node did not become idle within 60 s (see $state/slurmctld.log, $state/slurmd.log)" >&2
exit 3
