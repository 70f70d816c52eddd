#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests and by hand: munged, slurmctld and slurmd,
# started and stopped by PID, every file (config, state, logs, munge key and socket) in one scratch directory.
#
#   sudo apt-get install --no-install-recommends slurmctld slurmd slurm-client munge   # Debian 12: Slurm 22.05
#   sudo .ci/slurm.sh start
#   sudo .ci/slurm.sh stop
#   .ci/slurm.sh status
#
# Needs root (slurmd starts jobs as their user). The config is linked from /etc/slurm/slurm.conf (commands inside
# jobs look there); `start` refuses if the machine has a SLURM configuration of its own. No systemd, no accounting
# database: finished jobs stay visible to squeue for MinJobAge seconds (so give the executor plugin
# `--slurm-status-command squeue`), and each is recorded in $QUALCODE_SLURM_DIR/log/jobcomp.log.
# QUALCODE_SLURM_DIR (default /tmp/qualcode-slurm) holds everything; `stop` leaves it for its logs.
set -euo pipefail
DIR=${QUALCODE_SLURM_DIR:-/tmp/qualcode-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  for tool in munged mungekey slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin
    command -v "$tool" >/dev/null || {
      echo "slurm.sh: $tool not found: apt-get install --no-install-recommends slurmctld slurmd slurm-client munge" >&2
      exit 1
    }
  done
  [ "$(id -u)" = 0 ] || { echo "slurm.sh: start needs root (slurmd runs jobs as their owner)" >&2; exit 1; }
  mkdir -p "$DIR"/{ctld,spool,log,munge}
  chmod 700 "$DIR/munge"
  # munge: a key of our own and its own socket, so a munged already on this machine is left alone
  [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile="$DIR/munge/munge.key" 2>/dev/null ||
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge/munge.key"
  if ! pid_alive "$DIR/munge/munged.pid"; then
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
      --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10))
  cat >"$CONF" <<CONF
ClusterName=qualcode-ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${QUALCODE_SLURM_PORT:-6917}
SlurmdPort=$((${QUALCODE_SLURM_PORT:-6917} + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# one line per finished job: the scheduler's record that the tests read (there is no accounting database)
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
# finished jobs stay visible to squeue this long (the executor plugin wants at least 3 x its first status wait)
MinJobAge=600
# jobs start as soon as they are submitted, as on an idle cluster
SchedulerParameters=defer_batch=0,sched_min_interval=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  # Commands inside jobs read the default path: the executor plugin's job step drops SLURM_CONF from srun's
  # environment. Link it there unless the machine has a configuration of its own.
  if [ -e /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" != "$CONF" ]; then
    echo "slurm.sh: /etc/slurm/slurm.conf exists and is not ours; this machine has a SLURM of its own" >&2
    exit 1
  fi
  mkdir -p /etc/slurm
  ln -sfn "$CONF" /etc/slurm/slurm.conf
  export SLURM_CONF=$CONF
  pid_alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
  pid_alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
  for _ in $(seq 60); do
    sinfo -h -o %t 2>/dev/null | grep -q idle && break
    sleep 1
  done
  sinfo -h -o %t | grep -q idle || { echo "slurm.sh: the node did not come up; see $DIR/log" >&2; exit 1; }
  echo "SLURM is up: $(sinfo -h -o '%P %D node(s) %c CPUs %t') (config $CONF, linked from /etc/slurm/slurm.conf)"
}

stop() {
  # by PID only: slurmd first (it may still be running a job step), then the controller, then munged
  for pf in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    if pid_alive "$pf"; then
      pid=$(cat "$pf")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" != "$CONF" ] || rm -f /etc/slurm/slurm.conf
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) sinfo && squeue --states=all ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
