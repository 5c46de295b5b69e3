#!/usr/bin/env bash
# Stop the SLURM test cluster started by tests/slurm/start.sh.
#
#   tests/slurm/stop.sh [--quiet] [--keep-munge]
#
# Cancels its jobs, then stops slurmd, slurmctld, slurmdbd, mariadbd and
# munged (the last only if start.sh started it) in that order, each through
# the PID file in $PRUNEGEN_SLURM_DIR/run (never by process name), and waits
# for each to exit. The state directory (config, logs, database) is kept.
set -uo pipefail

QUIET=0
KEEP_MUNGE=0   # start.sh uses it when it only restarts SLURM in another mode
for arg in "$@"; do
    case "$arg" in
        --quiet) QUIET=1 ;;
        --keep-munge) KEEP_MUNGE=1 ;;
        *) echo "stop.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
DIR="${PRUNEGEN_SLURM_DIR:-/tmp/prunegen-slurm}"
RUN="$DIR/run"
log() { [ "$QUIET" = 1 ] || echo "[slurm stop] $*"; }

[ -d "$RUN" ] || { log "nothing to stop (no $RUN)"; exit 0; }
if [ -z "${PRUNEGEN_SLURM_LOCKED:-}" ]; then   # start.sh holds it when it calls us
    exec 9> "$DIR/.lock"
    flock -w 900 9 || { echo "stop.sh: timed out waiting for $DIR/.lock" >&2; exit 1; }
fi

# pid_of NAME: the live PID in $RUN/NAME.pid if that process is called NAME.
pid_of() {
    local pidf="$RUN/$1.pid" pid
    [ -s "$pidf" ] || return 1
    pid=$(tr -dc 0-9 < "$pidf")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${1%%-*}" ] || return 1  # slurmd-node2: a slurmd
    echo "$pid"
}

stop_one() {
    local name=$1 pid i
    if ! pid=$(pid_of "$name"); then
        rm -f "$RUN/$name.pid"
        return 0
    fi
    local t0; t0=$(date +%s.%N)
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 300); do          # up to 30 s
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not exit after 30 s, killing it"
        kill -KILL "$pid" 2>/dev/null
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$RUN/$name.pid"
    log "stopped $name (pid $pid) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
}

# Cancel what still runs, so no job step outlives slurmd.
if pid_of slurmctld >/dev/null && [ -s "$DIR/slurm.conf" ]; then
    export SLURM_CONF="$DIR/slurm.conf"
    ids=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${ids// /}" ]; then
        log "cancelling jobs: $ids"
        # shellcheck disable=SC2086
        timeout 10 scancel $ids 2>/dev/null
        for i in $(seq 100); do    # up to 10 s
            [ -z "$(timeout 5 squeue -h -t R,CG -o %A 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

# slurmd: the one slurmd of a cluster started before the second node (CONF_REV 2).
for name in slurmd-localhost slurmd-node2 slurmd slurmctld slurmdbd mariadbd; do
    stop_one "$name"
done
[ "$KEEP_MUNGE" = 1 ] || stop_one munged
rm -f "$DIR/mode"
log "stopped"
