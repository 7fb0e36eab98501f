#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this host (idempotent; run as root).
#
#   bash .ci/slurm-up.sh        # exit 0 once `sinfo` shows the node idle
#
# - installs slurm-wlm + munge with apt-get when `sbatch` is missing;
# - creates /etc/munge/munge.key when absent;
# - writes /etc/slurm/slurm.conf for one node (this host: nproc CPUs, ~95 % of RAM),
#   partition `debug` (default), select/cons_tres with CR_Core_Memory, no cgroups,
#   JobRequeue=1, short timeouts, accounting disabled (see note below);
# - starts munged, slurmctld, slurmd unless already running (pid files under /run),
#   restarting slurmctld/slurmd when the generated slurm.conf changed;
# - waits (bounded by SLURM_UP_TIMEOUT seconds, default 60) until the node is idle.
# On failure: exit non-zero with a one-line reason on stderr (full logs in /var/log/slurm).
#
# Accounting: real accounting needs slurmdbd plus MySQL/MariaDB (about 24 more packages,
# 28 MB, a database to start and sacctmgr set-up), so it is not configured here.  With
# AccountingStorageType=accounting_storage/none, plain `sacct` fails ("Slurm accounting
# storage is disabled"); submitit calls plain sacct, logs "Bypassing sacct error ... status
# may be inaccurate" and reports UNKNOWN for jobs without a result file (its job.result()
# then waits forever on a cancelled or killed job).  So read outcomes from submitit's result
# files and ask `squeue` which jobs are still queued (mtlstudy.slurm.wait_all/job_outcome).
# JobCompType=jobcomp/filetxt is on: one line per finished (or requeued) job in
# /var/log/slurm/jobcomp.log, readable with `sacct -c` (--completion), e.g.
#   sacct -c -o JobID,JobName,State,ExitCode,End --parsable2
# array tasks appear under their own job ids there (sacct -c prints "Unknown type ArrayJobId"
# errors on stderr and cannot select "123_4"), handy for debugging only.
set -u -o pipefail

fail() { echo "slurm-up: $*" >&2; exit 1; }
log() { [ -n "${SLURM_UP_QUIET:-}" ] || echo "slurm-up: $*"; }

TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
[ "$(id -u)" = 0 ] || fail "must run as root (installs packages and starts daemons)"

# ---------------------------------------------------------------- install
if ! command -v sbatch >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
    || ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "sbatch missing and apt-get not available to install slurm-wlm"
  log "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt_log=/tmp/slurm-up-apt.log
  # the packages' maintainer scripts try to start services; there is no init system here
  policy_created=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_created=1
  fi
  ok=1
  apt-get update >"$apt_log" 2>&1 || ok=0
  if [ "$ok" = 1 ]; then
    apt-get install -y --no-install-recommends slurm-wlm munge >>"$apt_log" 2>&1 || ok=0
  fi
  [ -n "$policy_created" ] && rm -f /usr/sbin/policy-rc.d
  if [ "$ok" != 1 ]; then
    why="$(grep -E '^(E|Err):' "$apt_log" | tail -n 1)"
    fail "apt-get install slurm-wlm munge failed: ${why:-see $apt_log}"
  fi
  command -v sbatch >/dev/null 2>&1 || fail "slurm-wlm installed but sbatch still not on PATH"
fi

# ---------------------------------------------------------------- munge
id munge >/dev/null 2>&1 || fail "user 'munge' does not exist (munge package broken?)"
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --force --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged >/tmp/slurm-up-munged.log 2>&1 \
    || fail "munged did not start: $(tail -n 1 /tmp/slurm-up-munged.log)"
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munged started but munge/unmunge round trip fails"
fi

# ---------------------------------------------------------------- slurm.conf
host="$(hostname -s)"
[ -n "$host" ] || fail "empty short hostname"
cpus="$(nproc)"
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
real_mem=$(( mem_mb * 95 / 100 ))
[ "$real_mem" -gt 256 ] || fail "cannot determine memory (MemTotal=${mem_mb} MB)"

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf=/etc/slurm/slurm.conf
new_conf="$(mktemp)"
cat >"$new_conf" <<EOF
# Generated by .ci/slurm-up.sh: single-node test cluster (rerun the script to regenerate).
ClusterName=mtlstudy
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if ! cmp -s "$new_conf" "$conf"; then
  log "writing $conf (node ${host}: CPUs=${cpus} RealMemory=${real_mem})"
  cp "$new_conf" "$conf" && chmod 0644 "$conf" || fail "cannot write $conf"
  conf_changed=1
fi
rm -f "$new_conf"

stop_pidfile() {  # stop the daemon whose pid is in $1 (only that process)
  local f="$1" p
  pid_alive "$f" || return 0
  p="$(cat "$f")"
  kill "$p" 2>/dev/null
  for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.25; done
  kill -9 "$p" 2>/dev/null
}

if [ "$conf_changed" = 1 ]; then
  stop_pidfile /run/slurmd.pid
  stop_pidfile /run/slurmctld.pid
fi

# ---------------------------------------------------------------- daemons
started="$conf_changed"
if ! pid_alive /run/slurmctld.pid; then
  started=1
  log "starting slurmctld"
  rm -f /run/slurmctld.pid
  slurmctld >/tmp/slurm-up-slurmctld.log 2>&1 \
    || fail "slurmctld did not start: $(tail -n 1 /var/log/slurm/slurmctld.log 2>/dev/null || tail -n 1 /tmp/slurm-up-slurmctld.log)"
fi
if ! pid_alive /run/slurmd.pid; then
  started=1
  log "starting slurmd"
  rm -f /run/slurmd.pid
  slurmd >/tmp/slurm-up-slurmd.log 2>&1 \
    || fail "slurmd did not start: $(tail -n 1 /var/log/slurm/slurmd.log 2>/dev/null || tail -n 1 /tmp/slurm-up-slurmd.log)"
fi

# ---------------------------------------------------------------- wait for idle node
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
resumed=0
while :; do
  state="$(sinfo -h -N -n "$host" -o '%T' 2>/dev/null | head -n 1)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|drained*|fail*)
      if [ "$resumed" = 0 ] && pid_alive /run/slurmd.pid; then
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  pid_alive /run/slurmctld.pid || fail "slurmctld exited: $(tail -n 1 /var/log/slurm/slurmctld.log 2>/dev/null)"
  pid_alive /run/slurmd.pid || fail "slurmd exited: $(tail -n 1 /var/log/slurm/slurmd.log 2>/dev/null)"
  if [ "$(date +%s)" -ge "$deadline" ]; then
    reason="$(sinfo -h -N -n "$host" -o '%E' 2>/dev/null | head -n 1)"
    fail "node ${host} not idle after ${TIMEOUT}s (state='${state:-no answer from sinfo}' reason='${reason}')"
  fi
  sleep 0.5
done
if [ "$started" = 1 ]; then
  # the restored node state can read idle before slurmd has registered: run one tiny job end to end
  left=$(( deadline - $(date +%s) )); [ "$left" -ge 10 ] || left=10
  out="$(timeout "$left" srun --quiet -N1 -n1 -t 1 --mem=64M -p debug true 2>&1)" \
    || fail "test job (srun true) failed: $(echo "$out" | tail -n 1)"
fi
log "cluster up: node ${host} ${state} (CPUs=${cpus} RealMemory=${real_mem} MB, partition debug)"
exit 0
