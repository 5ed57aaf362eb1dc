#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and benchmarks (run as root).
#
#   eval "$(bash scripts/local_slurm.sh start DIR)"   # prints `export SLURM_CONF=DIR/slurm.conf`
#   sbatch ... / sinfo / squeue                       # with SLURM_CONF set
#   bash scripts/local_slurm.sh stop DIR              # stops the daemons by their pid files
#
# start installs Debian's slurm-wlm and munge when they are missing (apt-get), writes a munge
# key and a slurm.conf under DIR, starts munged, slurmctld and slurmd, and waits until the one
# node (`hostname -s`, CPUs = nproc, one default partition "local") is idle.  Nothing outside
# DIR is written besides the packages.  Ports: SLURM_PORT (slurmctld, default 6817; "free":
# the first of two consecutive ports free on 127.0.0.1, picked here) and SLURM_PORT + 1 (slurmd).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop|status DIR" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/slurm.conf"
port=${SLURM_PORT:-6817}
if [[ "$cmd" == start && "$port" == free ]]; then
  port=$(python3 - <<'PY'
import socket
for _ in range(50):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
    if p >= 65535:
        continue
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p + 1))
    except OSError:
        continue
    print(p)
    break
else:
    raise SystemExit("no two consecutive free ports on 127.0.0.1 for slurmctld and slurmd")
PY
)
fi

stop() {
  # slurmd, then slurmctld, then munged: each by its pid file, each waited for
  for name in slurmd slurmctld munged; do
    pidfile="$dir/run/$name.pid"
    [[ -f "$pidfile" ]] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

case "$cmd" in
  stop)
    stop
    exit 0
    ;;
  status)
    SLURM_CONF="$conf" sinfo -h -o "%P %a %T %c" && exit 0
    exit 1
    ;;
  start) ;;
  *)
    echo "unknown command '$cmd' (start, stop or status)" >&2
    exit 2
    ;;
esac

if [[ $(id -u) -ne 0 ]]; then
  echo "$0 start runs the daemons as root; run it as root" >&2
  exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq slurm-wlm munge >&2
fi

stop  # a previous instance of this DIR
mkdir -p "$dir"/{run,log,state,spool,munge}
chmod 700 "$dir/munge"
key="$dir/munge/munge.key"
if [[ ! -s "$key" ]]; then
  dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
fi
chmod 400 "$key"
socket="$dir/munge/munge.socket"
munged --force --key-file="$key" --socket="$socket" --pid-file="$dir/run/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" >&2

node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
cat > "$conf" <<EOF
# written by scripts/local_slurm.sh: one node, one partition, state under $dir
ClusterName=hfmixture
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=300
MinJobAge=300
NodeName=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -f "$conf" >&2
slurmd -f "$conf" >&2
export SLURM_CONF="$conf"
for _ in $(seq 100); do
  state=$(sinfo -h -o "%T" 2>/dev/null | head -1 || true)
  if [[ "$state" == "idle" || "$state" == "mixed" || "$state" == "allocated" ]]; then
    echo "export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "Slurm did not report node $node idle within 20 s (state '${state:-none}'); logs in $dir/log" >&2
stop
exit 1
