#!/bin/bash
# A single-node SLURM cluster on this machine, for trying the launcher's SLURM backend (and for its test):
# munged, slurmctld and slurmd on localhost, one node with this machine's CPUs, one partition "debug".
# Usage: bash scripts/slurm_localhost.sh start STATE_DIR   (prints "export SLURM_CONF=..." on success)
#        bash scripts/slurm_localhost.sh stop STATE_DIR      (stops the daemons, and munged if start started it)
#        bash scripts/slurm_localhost.sh restart STATE_DIR   (stops and starts again; the queue is kept)
# A start in a STATE_DIR that holds a cluster's saved state recovers its queue; an empty STATE_DIR starts an empty one.
# Needs root and Debian's slurm-wlm and munge packages; with INSTALL=1 it installs them with apt-get first.
# The daemons keep their state, logs and configuration in STATE_DIR and nowhere else (besides munge's key).
set -euo pipefail

command=${1:-}
state=${2:-}
if [ -z "$command" ] || [ -z "$state" ]; then
    echo "usage: $0 start|stop|restart STATE_DIR" >&2
    exit 2
fi
state=$(mkdir -p "$state" && cd "$state" && pwd)
conf=$state/slurm.conf

stop_pid() {  # stop_pid FILE: end the process FILE names, and wait until it has ended (its state is saved)
    local pid
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$1"
}

stop() {
    stop_pid "$state/slurmd.pid"
    stop_pid "$state/slurmctld.pid"
}

stop_munged() {
    # munged serves every SLURM daemon of this machine: it is ended only when start started it and no other
    # cluster's daemon is left that needs it
    if [ -f "$state/munged.pid" ]; then
        if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
            echo "munged left running: another SLURM daemon on this machine uses it" >&2
            rm -f "$state/munged.pid"
        else
            stop_pid "$state/munged.pid"
        fi
    fi
}

case "$command" in
    stop) stop; stop_munged; exit 0 ;;
    restart) stop ;;
    start) ;;
    *) echo "error: unknown command '$command' (start, stop or restart)" >&2; exit 2 ;;
esac

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
    munged --force --pid-file="$state/munged.pid" >"$state/munged.out" 2>&1 || {
        echo "error: munged did not start (see $state/munged.out)" >&2; exit 3; }
fi

# the ports (SLURMCTLD_PORT, SLURMD_PORT) and the seconds after which a silent node is marked down (SLURMD_TIMEOUT)
# given, else the ones this cluster had (a restart keeps them), else SLURM's own ports and 60 s
saved_setting() { [ -f "$conf" ] && sed -n "s/^$1=//p" "$conf" || true; }
ctld_port=${SLURMCTLD_PORT:-$(saved_setting SlurmctldPort)}
slurmd_port=${SLURMD_PORT:-$(saved_setting SlurmdPort)}
slurmd_timeout=${SLURMD_TIMEOUT:-$(saved_setting SlurmdTimeout)}
host=$(hostname)
node=$(slurmd -C | head -1)  # this machine as slurmd sees it: NodeName=<host> CPUs=... RealMemory=...
mkdir -p "$state/ctld" "$state/spool"
# cred_expire: a requeued job waits this long before it starts again (SLURM's default, 120 s, leaves room for slow
# prologs and environments on big clusters; one local node has none). sched/builtin: one node needs no backfilling.
# (SLURM checks time limits every 30 s, so a job's --signal warning may come up to that much early, as sbatch's
# manual warns: a job whose limit is close to its warning's lead gets the warning at once.)
cat >"$conf" <<EOF
ClusterName=localhost
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=30
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldPort=${ctld_port:-6817}
SlurmdPort=${slurmd_port:-6818}
SlurmdTimeout=${slurmd_timeout:-60}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

stop
export SLURM_CONF=$conf
# a saved queue (a restart, or a start after a stop) is recovered; -c starts with an empty one
clean=-c
[ -f "$state/ctld/job_state" ] && clean=
slurmctld $clean -f "$conf" || { echo "error: slurmctld did not start (see $state/slurmctld.log)" >&2; exit 3; }
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
