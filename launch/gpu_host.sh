#!/usr/bin/env bash
# GPU hosts: one host (one process sees every local GPU), several hosts over ssh (one process
# per host, explicit coordinator), or SLURM (srun, one task per GPU, auto-detected).
#
#   launch/gpu_host.sh setup [--hosts=h0,h1]
#   launch/gpu_host.sh run   --config=configs/t5.py --workdir=runs/t5 [--config.key=value ...]
#   launch/gpu_host.sh run   --hosts=h0,h1 --config=... --workdir=/shared/runs/t5
#   launch/gpu_host.sh logs  --hosts=h0,h1
#   launch/gpu_host.sh stop  --hosts=h0,h1
#   launch/gpu_host.sh slurm --nodes=2 --gpus-per-node=8 --config=... --workdir=/shared/runs/t5
#
# Every command is printed as "+ CMD"; with --dry-run it is only printed. See launch/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# shellcheck source=launch/lib.sh
source "$here/lib.sh"

# NVLink multicast (NCCL's NVLS algorithms) reserves multicast memory on the NVSwitch
# fabric, a resource shared with every other job on the machine; on shared machines it must
# stay off, so every command started here runs with NCCL_NVLS_ENABLE=0.
nccl_env=(NCCL_NVLS_ENABLE=0)

usage() {
  cat <<'EOF'
usage: launch/gpu_host.sh SUBCOMMAND [flags] [--config.key=value ...] [-- extra lazy_jax.main flags]

subcommands:
  setup   make .venv with lazy_jax + jax[cuda12] in the checkout, here or on each --hosts host
  run     without --hosts: one process on this host using all its GPUs (foreground);
          with --hosts=h0[,h1,...]: one detached process per host over ssh, with
          --coordinator_address=h0:PORT --num_processes=N --process_id=i when N > 1
  logs    follow the log of process 0 (on the first --hosts host)
  stop    stop the processes that `run --hosts` started
  slurm   srun one task per GPU on --nodes nodes; jax.distributed.initialize() reads SLURM's
          environment (--multihost). Run it inside salloc/sbatch or let srun allocate.

flags (environment variable in brackets):
  --config=FILE[:ARG]      run, slurm: config, e.g. configs/t5.py                  [CONFIG]
  --workdir=DIR            run, slurm: output directory; shared storage when several
                           hosts write to it                                      [WORKDIR]
  --config.KEY=VALUE       config override, passed through (repeatable)
  --hosts=H0,H1,...        ssh destinations ([user@]host); the first is the coordinator [GPU_HOSTS]
  --coordinator-host=HOST  address the other hosts reach host 0 at (default: the first
                           --hosts entry without user@)
  --port=PORT              coordinator port (default 12345)
  --remote-dir=DIR         checkout path on the hosts (default: this checkout's path,
                           i.e. a shared file system or a clone at the same path)
  --mem-fraction=F         XLA_PYTHON_CLIENT_MEM_FRACTION (default: jax's own, 0.75)
  --env=KEY=VALUE          extra environment for the training processes (repeatable)
  --log=FILE               run, logs, stop: log file relative to the checkout
                           (default logs/main.log; with --hosts, logs/main.<process_id>.log)
  --nodes=N                slurm: number of nodes (default 1)
  --gpus-per-node=G        slurm: GPUs per node = tasks per node (default 8)
  --partition=P            slurm: partition
  --time=T                 slurm: time limit, e.g. 24:00:00
  --srun-arg=ARG           slurm: extra srun argument (repeatable), e.g. --account=X
  --python=EXE             setup: interpreter for the venv (default python3.12)
  --cuda=cuda12|cuda13     setup: jax extra for the CUDA major version (default cuda12)
  --jax-version=X.Y.Z      setup: default the jax pin in setup.cfg
  --pip=PACKAGE            setup: extra package to install (repeatable)
  --dry-run                print the commands, run nothing
  -h, --help               this text
Anything after `--` goes to lazy_jax.main unchanged.
EOF
}

subcommand=${1:-}
parse_subcommand "$subcommand" setup run logs stop slurm
shift

config=${CONFIG:-}
workdir=${WORKDIR:-}
hosts_csv=${GPU_HOSTS:-}
coordinator_host=""
port=12345
remote_dir=$root
mem_fraction=""
log=logs/main.log
nodes=1
gpus_per_node=8
partition=""
time_limit=""
python=python3.12
cuda=cuda12
jax_version=""
extra_pip=()
srun_args=()
env_kv=()
main_args=()

parse_flags "$subcommand" \
  --config=config --workdir=workdir --hosts=hosts_csv --coordinator-host=coordinator_host --port=port \
  --remote-dir=remote_dir --mem-fraction=mem_fraction '--env=env_kv[]' --log=log --nodes=nodes \
  --gpus-per-node=gpus_per_node --partition=partition --time=time_limit '--srun-arg=srun_args[]' \
  --python=python --cuda=cuda --jax-version=jax_version '--pip=extra_pip[]' \
  -- "$@"

check_env_kv ${env_kv[@]+"${env_kv[@]}"}
hosts=()
if [[ -n $hosts_csv ]]; then
  IFS=, read -r -a hosts <<< "$hosts_csv"
  for h in "${hosts[@]}"; do
    [[ $h =~ ^[A-Za-z0-9_.@-]+$ ]] || die "--hosts wants a comma list of [user@]host, got '$hosts_csv'"
  done
fi
num_hosts=${#hosts[@]}
[[ $port =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'"
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$nodes'"
[[ $gpus_per_node =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, got '$gpus_per_node'"
[[ -z $mem_fraction || $mem_fraction =~ ^(0?\.[0-9]+|1(\.0*)?)$ ]] \
  || die "--mem-fraction must be a number in (0, 1], got '$mem_fraction'"
[[ $cuda == cuda12 || $cuda == cuda13 ]] || die "--cuda must be cuda12 or cuda13, got '$cuda'"
[[ $log != /* && $log != *..* ]] || die "--log must be a path inside the checkout, got '$log'"

train_env=("${nccl_env[@]}")
if [[ -n $mem_fraction ]]; then
  train_env+=("XLA_PYTHON_CLIENT_MEM_FRACTION=$mem_fraction")
fi
train_env+=(${env_kv[@]+"${env_kv[@]}"})

# Per-process log and pid files when several processes may share one checkout (NFS).
process_log() { echo "${log%.log}.$1.log"; }
process_pid() { echo "${log%.log}.$1.pid"; }

host_ssh() {
  # -n: no stdin, so a detached remote command does not keep the session open.
  run ssh -n -o BatchMode=yes "$1" "$2"
}

need_hosts() {
  [[ $num_hosts -gt 0 ]] || die "'$subcommand' needs --hosts=H0[,H1,...] (or \$GPU_HOSTS)"
}

main_cmd() {
  shjoin .venv/bin/python -m lazy_jax.main "--config=$config" "--workdir=$workdir" \
    ${main_args[@]+"${main_args[@]}"} "$@"
}

case "$subcommand" in
  setup)
    if [[ -z $jax_version ]]; then
      jax_version=$(pinned_jax_version "$root")
    fi
    packages=(-e . "jax[$cuda]==$jax_version" ${extra_pip[@]+"${extra_pip[@]}"})
    setup_line="cd $(shq "$remote_dir") && { [ -x .venv/bin/python ] || $(shq "$python") -m venv .venv; } && .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q $(shjoin "${packages[@]}") && .venv/bin/python -c 'import jax; print(jax.devices())'"
    if [[ $num_hosts -eq 0 ]]; then
      run_sh "$setup_line"
    else
      # Hosts that share the checkout over a network file system share its .venv too:
      # set up once (one host) rather than racing several pip installs on it.
      for h in "${hosts[@]}"; do
        host_ssh "$h" "$setup_line"
      done
    fi
    ;;

  run)
    require "$config" --config CONFIG run
    require "$workdir" --workdir WORKDIR run
    if [[ $num_hosts -eq 0 ]]; then
      # One process drives every local GPU; no distributed initialisation needed.
      run cd "$remote_dir"
      run env "${train_env[@]}" .venv/bin/python -m lazy_jax.main "--config=$config" "--workdir=$workdir" \
        ${main_args[@]+"${main_args[@]}"}
    else
      coordinator=${coordinator_host:-${hosts[0]#*@}}
      for ((i = 0; i < num_hosts; i++)); do
        multihost=()
        if [[ $num_hosts -gt 1 ]]; then
          multihost=("--coordinator_address=$coordinator:$port" "--num_processes=$num_hosts" "--process_id=$i")
        fi
        plog=$(process_log "$i")
        host_ssh "${hosts[$i]}" "cd $(shq "$remote_dir") && mkdir -p $(shq "$(dirname "$plog")") && $(exports_prefix "${train_env[@]}"){ nohup $(main_cmd ${multihost[@]+"${multihost[@]}"}) > $(shq "$plog") 2>&1 < /dev/null & echo \$! > $(shq "$(process_pid "$i")"); }"
      done
      [[ $DRY_RUN == 1 ]] || echo "started $num_hosts process(es); follow with: launch/gpu_host.sh logs --hosts=$hosts_csv" >&2
    fi
    ;;

  logs)
    need_hosts
    host_ssh "${hosts[0]}" "tail -n +1 -F $(shq "$remote_dir/$(process_log 0)")"
    ;;

  stop)
    need_hosts
    for ((i = 0; i < num_hosts; i++)); do
      pid=$(process_pid "$i")
      host_ssh "${hosts[$i]}" "cd $(shq "$remote_dir") && if [ -f $(shq "$pid") ]; then kill \$(cat $(shq "$pid")) 2>/dev/null || true; rm -f $(shq "$pid"); fi"
    done
    ;;

  slurm)
    require "$config" --config CONFIG slurm
    require "$workdir" --workdir WORKDIR slurm
    [[ $num_hosts -eq 0 ]] || die "'slurm' takes no --hosts: SLURM places the tasks"
    # jax's SLURM detection binds each process to GPU number SLURM_LOCALID, so run one task
    # per GPU, each seeing all of the node's GPUs (--gpus-per-node, not --gpus-per-task).
    export_list=ALL
    for kv in "${train_env[@]}"; do
      [[ $kv != *,* ]] || die "slurm passes environment through srun --export, which splits on commas: '$kv'"
      export_list+=",$kv"
    done
    srun_cmd=(srun "--nodes=$nodes" "--ntasks-per-node=$gpus_per_node" "--gpus-per-node=$gpus_per_node"
              "--chdir=$remote_dir" "--export=$export_list")
    if [[ -n $partition ]]; then
      srun_cmd+=("--partition=$partition")
    fi
    if [[ -n $time_limit ]]; then
      srun_cmd+=("--time=$time_limit")
    fi
    srun_cmd+=(${srun_args[@]+"${srun_args[@]}"})
    run "${srun_cmd[@]}" .venv/bin/python -m lazy_jax.main "--config=$config" "--workdir=$workdir" \
      --multihost ${main_args[@]+"${main_args[@]}"}
    ;;
esac
