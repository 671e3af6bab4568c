#!/usr/bin/env bash
# The deep-consensus protocol through a real Slurm: a one-node cluster on localhost from
# Debian's packages (slurmctld + slurmd, munge, slurmdbd on MariaDB so that sacct works),
# a Scipion hosts.conf with a Slurm queue that takes one job per step (QUEUE_FOR_JOBS),
# then tools/slurm_demo.py runs the demo data locally and through the queue, checks with
# sacct that the stages ran as Slurm jobs and compares the outputs.
#
#   sudo tools/slurm_demo.sh              # as root, on a Debian 12 machine or container
#
# PYTHON (default .venv/bin/python: 'make install') is the Python with the package;
# JOBS (default 3) the jobs per stage; WORK (default /tmp/deepconsensus-slurm) the folder
# for the configuration, logs and Scipion projects.  The cluster keeps running afterwards
# (scancel/scontrol work on it); 'tools/slurm_demo.sh stop' stops its daemons.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
JOBS=${JOBS:-3}
WORK=${WORK:-/tmp/deepconsensus-slurm}
HOST=$(hostname -s)
DB_PASSWORD=deepconsensus-demo

stop() {
    for daemon in slurmd slurmctld slurmdbd; do
        if [ -f "/run/$daemon.pid" ]; then
            kill "$(cat "/run/$daemon.pid")" 2>/dev/null || true
            rm -f "/run/$daemon.pid"
        fi
    done
}

if [ "${1:-}" = stop ]; then
    stop
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root (it installs and starts Slurm)" >&2; exit 1; }
[ -x "$PYTHON" ] || { echo "no Python with the package at $PYTHON: 'make install' or set PYTHON" >&2; exit 1; }
mkdir -p "$WORK"

echo "== packages"
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v mariadbd >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm slurmdbd munge mariadb-server
fi
slurmctld -V

echo "== munge"
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge | grep -q "STATUS: *Success"

echo "== MariaDB for the accounting (sacct)"
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
    mariadbd-safe >"$WORK/mariadb.log" 2>&1 &
    for _ in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 1; done
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

echo "== Slurm configuration (one node: $HOST, $(nproc) CPUs)"
stop
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
chmod 600 /etc/slurm/slurmdbd.conf
MEMORY=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=deepconsensus
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
NodeName=$HOST CPUs=$(nproc) RealMemory=$MEMORY State=UNKNOWN
PartitionName=dc Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

echo "== daemons"
slurmdbd
for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
sacctmgr -i add cluster deepconsensus >/dev/null 2>&1 || true
slurmctld
slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
sinfo
[ "$state" = idle ] || { echo "the node is '$state', not idle: see /var/log/slurm" >&2; exit 1; }

echo "== Scipion hosts.conf with a Slurm queue"
# One CPU per job: Scipion's JOB_THREADS is the protocol's thread count (how many steps
# run at once), which asked of each job would not fit on a small node.
cat >"$WORK/hosts.conf" <<'EOF'
[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME = SLURM
MANDATORY = 0
SUBMIT_COMMAND = sbatch %_(JOB_SCRIPT)s
CANCEL_COMMAND = scancel %_(JOB_ID)s
CHECK_COMMAND = squeue -h -j %_(JOB_ID)s
SUBMIT_TEMPLATE = #!/bin/bash
    #SBATCH --job-name=%_(JOB_NAME)s
    #SBATCH --partition=%_(JOB_QUEUE)s
    #SBATCH --output=%_(JOB_LOGS)s.out
    #SBATCH --error=%_(JOB_LOGS)s.err
    #SBATCH --ntasks=1
    #SBATCH --cpus-per-task=1
    #SBATCH --mem=%_(JOB_MEMORY)sM
    %_(JOB_COMMAND)s
QUEUES = {"dc": [["JOB_MEMORY", "4096", "Memory (MB)", "Memory of each job"],
                 ["QUEUE_FOR_JOBS", "Y", "Use queue for jobs", "One cluster job per step"]]}
QUEUES_DEFAULT = {"JOB_GPUS": "0"}
EOF
cat "$WORK/hosts.conf"

echo "== the demo, locally and through Slurm"
cd "$WORK"
SCIPION_HOSTS="$WORK/hosts.conf" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" "$ROOT/tools/slurm_demo.py" --user-data "$WORK/data" --jobs "$JOBS" \
    --queue dc
