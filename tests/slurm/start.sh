#!/usr/bin/env bash
# Start (or reuse) a real single-node SLURM cluster on this machine, for tests.
#
#   tests/slurm/start.sh [--no-accounting]
#
# Needs root and Debian/apt (installs slurm-wlm, munge and, for accounting,
# slurmdbd + mariadb-server where missing). All state, config, logs and PID
# files live in $PRUNEGEN_SLURM_DIR (default /tmp/prunegen-slurm);
# /etc/slurm/slurm.conf is made a symlink to the config there so that sbatch,
# squeue, sacct, scontrol... work from any process without SLURM_CONF.
# Idempotent: does nothing if the cluster already runs in the requested mode,
# restarts it if it runs in the other mode. Stop it with tests/slurm/stop.sh.
set -euo pipefail

ACCOUNTING=1
for arg in "$@"; do
    case "$arg" in
        --no-accounting) ACCOUNTING=0 ;;
        --accounting) ACCOUNTING=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "start.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
MODE=$([ "$ACCOUNTING" = 1 ] && echo accounting || echo no-accounting)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${PRUNEGEN_SLURM_DIR:-/tmp/prunegen-slurm}"
DB_PORT="${PRUNEGEN_SLURM_DB_PORT:-3306}"
MIN_JOB_AGE="${PRUNEGEN_SLURM_MIN_JOB_AGE:-60}"
WAIT_S="${PRUNEGEN_SLURM_WAIT_S:-60}"
export SLURM_CONF="$DIR/slurm.conf"
# Bump when the generated slurm.conf changes: a cluster running an older one is restarted.
CONF_REV=4
T0=$(date +%s.%N)

elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
log() { echo "[slurm start +$(elapsed)s] $*"; }
die() { echo "[slurm start] ERROR: $*" >&2; dump_logs >&2; exit 1; }
dump_logs() {
    for f in "$DIR"/log/*.log "$DIR"/log/*.err; do
        [ -s "$f" ] || continue
        echo "----- $f (last 40 lines) -----"
        tail -n 40 "$f"
    done
}

[ "$(id -u)" = 0 ] || { echo "start.sh: must run as root" >&2; exit 1; }
mkdir -p "$DIR" "$DIR/run" "$DIR/log"
# The daemons must not inherit descriptors from whoever runs us (an inherited
# pipe write end keeps that pipe's reader waiting for EOF, e.g. a CI runner).
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done
# One start/stop at a time (e.g. parallel pytest workers). The daemons are
# started with fd 9 closed so that they do not hold the lock.
exec 9> "$DIR/.lock"
flock -w 900 9 || { echo "start.sh: timed out waiting for $DIR/.lock" >&2; exit 1; }
# Readable by the munge/mysql users and by jobs.
chmod 755 "$DIR" "$DIR/run" "$DIR/log"

# --- already running? ------------------------------------------------------
# alive NAME: the PID in $DIR/run/NAME.pid is alive and is a process called NAME.
alive() {
    local pidf="$DIR/run/$1.pid" pid
    [ -s "$pidf" ] || return 1
    pid=$(tr -dc 0-9 < "$pidf")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${1%%-*}" ]  # slurmd-node2: a slurmd
}
running_mode() {
    alive slurmctld && alive slurmd-localhost && alive slurmd-node2 || return 1
    [ -s "$DIR/mode" ] || return 1
    [ "$(cat "$DIR/conf-rev" 2>/dev/null)" = "$CONF_REV" ] || return 1
    local m; m=$(cat "$DIR/mode")
    if [ "$m" = accounting ]; then alive slurmdbd && alive mariadbd || return 1; fi
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || return 1
    echo "$m"
}
# start_daemon NAME CHECK CMD...: run CMD (a self-daemonizing daemon), then wait
# until CHECK succeeds. Fails early if the daemon wrote its PID file and died, or
# logged "fatal:"; its PID file may appear only some time after CMD returns.
start_daemon() {
    local name=$1 check=$2 logf="$DIR/log/$1.log" before=0 i
    shift 2
    [ -f "$logf" ] && before=$(wc -l < "$logf")
    "$@" > "$DIR/log/$name.err" 2>&1 9>&- || die "$name failed to start"
    for i in $(seq $((WAIT_S * 5))); do
        if eval "$check" >/dev/null 2>&1 && alive "$name"; then return 0; fi
        if [ -s "$DIR/run/$name.pid" ] && ! alive "$name"; then die "$name exited"; fi
        if [ -f "$logf" ] && tail -n +$((before + 1)) "$logf" | grep -q 'fatal:'; then die "$name: fatal error"; fi
        sleep 0.2
    done
    die "$name not up after ${WAIT_S}s"
}

if current=$(running_mode); then
    if [ "$current" = "$MODE" ]; then
        log "already running ($MODE), nothing to do"
        echo "PRUNEGEN_SLURM_DIR=$DIR"
        echo "PRUNEGEN_SLURM_MODE=$MODE"
        exit 0
    fi
    log "running in mode $current, restarting in mode $MODE"
fi
# Anything of ours left over (other mode, half-started, crashed): stop it.
PRUNEGEN_SLURM_LOCKED=1 PRUNEGEN_SLURM_DIR="$DIR" bash "$HERE/stop.sh" --quiet --keep-munge
rm -f "$DIR/mode"

# --- packages --------------------------------------------------------------
need=(slurm-wlm munge)
[ "$ACCOUNTING" = 1 ] && need+=(slurmdbd mariadb-server)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # "invoke-rc.d: policy-rc.d denied execution" is normal without an init system.
    apt-get -o DPkg::Lock::Timeout=300 update -qq > "$DIR/log/apt.err" 2>&1 || { cat "$DIR/log/apt.err" >&2; die "apt-get update failed"; }
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >> "$DIR/log/apt.err" 2>&1 \
        || { tail -n 30 "$DIR/log/apt.err" >&2; die "apt-get install failed"; }
fi
[ ${#missing[@]} -gt 0 ] && log "installed"
for b in munged munge unmunge slurmctld slurmd sinfo sbatch scontrol; do
    command -v "$b" >/dev/null || die "$b not found after install"
done

# --- config ----------------------------------------------------------------
NCPU=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
mkdir -p "$DIR/state" "$DIR/spool/localhost" "$DIR/spool/node2"
# A GPU-less node that still accepts GPU requests: gres.conf needs File= to
# be a character device, or slurmd drops the GRES and the node goes INVAL.
ln -sfn /dev/null "$DIR/fake-gpu0"

if [ "$ACCOUNTING" = 1 ]; then
    ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
# A step past its memory request is killed (OUT_OF_MEMORY), as cgroups do on real clusters;
# polled every 2 s, so a cell that overshoots is caught within seconds.
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=2"
else
    ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

cat > "$DIR/slurm.conf.new" <<CONF
# Written by tests/slurm/start.sh ($MODE). Do not edit: regenerated on start.
ClusterName=prunegen
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Short job-step credential lifetime: a requeued job restarts after ~10 s, not 120 s.
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
JobRequeue=1
MinJobAge=$MIN_JOB_AGE
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
MailProg=/bin/true
# A node named in $DIR/broken-nodes is broken: its tasks cannot start Python (tests/slurm/cluster.py
# broken_node), as on a node whose software or file system is broken.
TaskProlog=$DIR/task-prolog.sh
JobCompType=jobcomp/none
$ACCT
# A second node on this machine (its own slurmd on 127.0.0.2:6820), only in partition "flaky":
# tests make it a broken node (tests/slurm/broken-node.sh) and see it excluded.
NodeName=node2 NodeHostname=node2 NodeAddr=127.0.0.2 Port=6820 CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
# After node2: SLURM takes every node name for a lone node called "localhost"
# (_find_node_record), so node2 would read as a duplicate of it.
NodeName=localhost CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
# Preemption: a job in "high" requeues the "debug"/"short" jobs it needs the CPUs of.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE PriorityTier=1 State=UP
PartitionName=high Nodes=localhost MaxTime=INFINITE PriorityTier=2 State=UP
# A one-minute MaxTime: cells longer than that go through time-out -> requeue -> resume.
PartitionName=short Nodes=localhost MaxTime=1 PriorityTier=1 State=UP
PartitionName=flaky Nodes=localhost,node2 MaxTime=INFINITE PriorityTier=1 State=UP
CONF
mv "$DIR/slurm.conf.new" "$DIR/slurm.conf"

cat > "$DIR/task-prolog.sh" <<PROLOG
#!/bin/sh
# Run by slurmstepd before each task; "export X=Y" lines set the task's environment.
if grep -qx "\$SLURMD_NODENAME" "$DIR/broken-nodes" 2>/dev/null; then
    echo "export PYTHONHOME=/nonexistent/broken-node"
fi
PROLOG
chmod 755 "$DIR/task-prolog.sh"
rm -f "$DIR/broken-nodes"

cat > "$DIR/gres.conf" <<CONF
AutoDetect=off
NodeName=localhost Name=gpu File=$DIR/fake-gpu0
NodeName=node2 Name=gpu File=$DIR/fake-gpu0
CONF

# Client commands read /etc/slurm/slurm.conf: point it at ours.
mkdir -p /etc/slurm
for f in slurm.conf gres.conf; do
    if [ -e "/etc/slurm/$f" ] && [ ! -L "/etc/slurm/$f" ]; then
        mv "/etc/slurm/$f" "/etc/slurm/$f.before-prunegen"
        log "moved the existing /etc/slurm/$f to /etc/slurm/$f.before-prunegen"
    fi
    ln -sfn "$DIR/$f" "/etc/slurm/$f"
done

# --- munge -----------------------------------------------------------------
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    alive munged || log "munged already running (not started by us: stop.sh will leave it alone)"
else
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid \
        > "$DIR/log/munged.err" 2>&1 9>&- || die "munged failed to start"
    # stop.sh stops it through this copy of its PID file.
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munge does not work"
fi

# --- MariaDB + slurmdbd ----------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
    command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null || die "slurmdbd/mariadbd missing"
    DB="$DIR/mysql"
    DBRUN="$DIR/mysql-run"
    install -d -o mysql -g mysql -m 0750 "$DBRUN"
    touch "$DIR/log/mariadb.log"; chown mysql:mysql "$DIR/log/mariadb.log"
    runuser -u mysql -- test -x "$DIR" || die "user mysql cannot enter $DIR; choose a PRUNEGEN_SLURM_DIR it can reach"
    if [ ! -d "$DB/mysql" ]; then
        log "initialising MariaDB in $DB"
        rm -rf "$DB"; install -d -o mysql -g mysql -m 0750 "$DB"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB" \
            --auth-root-authentication-method=socket --skip-test-db \
            > "$DIR/log/mariadb-install.err" 2>&1 || die "mariadb-install-db failed"
    fi
    setsid mariadbd --no-defaults --user=mysql --datadir="$DB" \
        --bind-address=127.0.0.1 --port="$DB_PORT" \
        --socket="$DBRUN/mysqld.sock" --pid-file="$DBRUN/mariadbd.pid" \
        --log-error="$DIR/log/mariadb.log" --skip-log-bin \
        --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900 \
        < /dev/null > /dev/null 2>&1 9>&- &
    echo $! > "$DIR/run/mariadbd.pid"
    SQL() { mariadb --no-defaults -u root -S "$DBRUN/mysqld.sock" "$@"; }
    for _ in $(seq $((WAIT_S * 5))); do
        SQL -e 'SELECT 1' >/dev/null 2>&1 && break
        alive mariadbd || die "mariadbd exited"
        sleep 0.2
    done
    SQL -e 'SELECT 1' >/dev/null 2>&1 || die "MariaDB did not come up"
    # Keep the PID that mariadbd itself reports.
    [ -s "$DBRUN/mariadbd.pid" ] && cp "$DBRUN/mariadbd.pid" "$DIR/run/mariadbd.pid"
    SQL <<SQLEOF || die "could not create the slurm database/user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQLEOF

    umask 077
    cat > "$DIR/slurmdbd.conf" <<CONF
# Written by tests/slurm/start.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
    umask 022
    chmod 600 "$DIR/slurmdbd.conf"
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF.
    log "MariaDB up"
    start_daemon slurmdbd "(exec 3<>/dev/tcp/127.0.0.1/6819)" slurmdbd
    log "slurmdbd up"
fi

# --- slurmctld + slurmd ----------------------------------------------------
start_daemon slurmctld "scontrol ping | grep -q UP" slurmctld -f "$SLURM_CONF"
log "slurmctld up"
start_daemon slurmd-localhost true slurmd -f "$SLURM_CONF" -N localhost
start_daemon slurmd-node2 true slurmd -f "$SLURM_CONF" -N node2

# Both nodes up (a node that registered DOWN after a restart is resumed once).
for node in localhost node2; do
    resumed=0
    state=""
    deadline=$(( $(date +%s) + WAIT_S ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        state=$(sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n1)
        case "$state" in
            idle|mixed|allocated|completing) break ;;
            *down*|*drain*|*fail*)
                if [ "$resumed" = 0 ] && alive "slurmd-$node"; then
                    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                    resumed=1
                fi ;;
        esac
        alive "slurmd-$node" || die "slurmd of $node exited"
        sleep 0.2
    done
    case "$state" in
        idle|mixed|allocated|completing) ;;
        *) scontrol show node "$node" >&2 || true; die "node $node state is '$state' after ${WAIT_S}s" ;;
    esac
done

echo "$MODE" > "$DIR/mode"
echo "$CONF_REV" > "$DIR/conf-rev"
log "up in $(elapsed) s (node $state)"
echo "PRUNEGEN_SLURM_DIR=$DIR"
echo "PRUNEGEN_SLURM_MODE=$MODE"
