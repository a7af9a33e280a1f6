#!/usr/bin/env bash
# Cloud TPU VMs and pod slices: create, set up, run a config, follow logs, copy back, delete.
#
#   launch/tpu_vm.sh create    --name=N --zone=Z --accelerator-type=v5p-64 [--spot]
#   launch/tpu_vm.sh setup     --name=N --zone=Z
#   launch/tpu_vm.sh run       --name=N --zone=Z --config=configs/t5.py --workdir=gs://B/run \
#                              [--config.key=value ...] [-- other lazy_jax.main flags]
#   launch/tpu_vm.sh logs      --name=N --zone=Z
#   launch/tpu_vm.sh copy-back --name=N --zone=Z --workdir=gs://B/run [--dest=runs]
#   launch/tpu_vm.sh stop      --name=N --zone=Z
#   launch/tpu_vm.sh delete    --name=N --zone=Z
#
# Every command is printed as "+ CMD"; with --dry-run it is only printed. See launch/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# shellcheck source=launch/lib.sh
source "$here/lib.sh"

usage() {
  cat <<'EOF'
usage: launch/tpu_vm.sh SUBCOMMAND [flags] [--config.key=value ...] [-- extra lazy_jax.main flags]

subcommands:
  create     create the TPU VM / pod slice
  setup      copy this checkout to every worker, make .venv there, install lazy_jax + jax[tpu]
  run        start a config on every worker (detached; --multihost)
  logs       follow worker 0's log
  copy-back  copy the workdir and worker 0's log back to this machine
  stop       stop the run started by `run` on every worker
  delete     delete the TPU VM / pod slice

flags (environment variable in brackets):
  --name=NAME                TPU VM name                          [TPU_NAME]     required
  --zone=ZONE                e.g. us-east5-a                      [TPU_ZONE]     required
  --project=PROJECT          default: gcloud's configured project [TPU_PROJECT]
  --accelerator-type=TYPE    create: v4-8, v5p-64, v5litepod-16, v6e-8 ...
                                                                  [TPU_ACCELERATOR_TYPE]
  --version=RUNTIME          create: TPU software version; default by generation
                             (v2-alpha-tpuv5, v2-alpha-tpuv5-lite, v2-alpha-tpuv6e,
                             tpu-ubuntu2204-base)                 [TPU_RUNTIME_VERSION]
  --spot | --preemptible     create: spot / preemptible capacity
  --python=EXE               setup: interpreter for the venv (default python3.12; installed
                             from the deadsnakes PPA when the image lacks it)
  --jax-version=X.Y.Z        setup: default the jax pin in setup.cfg
  --pip=PACKAGE              setup: extra package to install (repeatable), e.g. gcsfs
  --config=FILE[:ARG]        run: config, e.g. configs/t5.py                   [CONFIG]
  --workdir=DIR              run, copy-back: gs://BUCKET/PATH (or storage every
                             worker shares)                                   [WORKDIR]
  --config.KEY=VALUE         run: config override, passed through (repeatable)
  --env=KEY=VALUE            run: exported on the workers (repeatable), e.g. TFDS_DATA_DIR=gs://...
  --remote-dir=DIR           checkout directory under the workers' home (default lazy_jax)
  --log=FILE                 run, logs, copy-back: log file relative to the remote checkout
                             (default logs/main.log)
  --dest=DIR                 copy-back: local destination directory (default runs)
  --dry-run                  print the commands, run nothing
  -h, --help                 this text
Anything after `--` goes to lazy_jax.main unchanged.
EOF
}

subcommand=${1:-}
parse_subcommand "$subcommand" create setup run logs copy-back stop delete
shift

name=${TPU_NAME:-}
zone=${TPU_ZONE:-}
project=${TPU_PROJECT:-}
accelerator_type=${TPU_ACCELERATOR_TYPE:-}
runtime_version=${TPU_RUNTIME_VERSION:-}
config=${CONFIG:-}
workdir=${WORKDIR:-}
capacity=""
python=python3.12
jax_version=""
remote_dir=lazy_jax
log=logs/main.log
dest=runs
extra_pip=()
env_kv=()
main_args=()

parse_flags "$subcommand" \
  --name=name --zone=zone --project=project --accelerator-type=accelerator_type --version=runtime_version \
  --python=python --jax-version=jax_version '--pip=extra_pip[]' --config=config --workdir=workdir \
  '--env=env_kv[]' --remote-dir=remote_dir --log=log --dest=dest \
  --spot:capacity=--spot --preemptible:capacity=--preemptible \
  -- "$@"

check_env_kv ${env_kv[@]+"${env_kv[@]}"}
require "$name" --name TPU_NAME "$subcommand"
require "$zone" --zone TPU_ZONE "$subcommand"
# The remote checkout lives directly under the workers' home, so `scp --recurse` of a
# directory with the same name lands on it and every ssh command can `cd` into it.
[[ $remote_dir =~ ^[A-Za-z0-9_.-]+$ && $remote_dir != . && $remote_dir != .. ]] \
  || die "--remote-dir must be one directory name under the workers' home, got '$remote_dir'"
[[ $log != /* && $log != *..* ]] || die "--log must be a path inside the remote checkout, got '$log'"

gcloud_tpu=(gcloud compute tpus tpu-vm)
location=("--zone=$zone")
if [[ -n $project ]]; then
  location+=("--project=$project")
fi

# ssh WORKER COMMAND: run a shell command line on one worker (0, 1, ...) or on all.
tpu_ssh() {
  run "${gcloud_tpu[@]}" ssh "$name" "${location[@]}" "--worker=$1" --command "$2"
}

# Default TPU software version for an accelerator type, from its generation prefix.
default_runtime_version() {
  case "$1" in
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default TPU software version for accelerator type '$1'; pass --version" ;;
  esac
}

# The workdir as seen from worker 0's home directory (for scp).
remote_workdir_path() {
  case "$workdir" in
    /*|'~'*) echo "$workdir" ;;
    *) echo "$remote_dir/$workdir" ;;
  esac
}

case "$subcommand" in
  create)
    require "$accelerator_type" --accelerator-type TPU_ACCELERATOR_TYPE create
    [[ $accelerator_type =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] \
      || die "--accelerator-type must look like v4-8, v5p-64 or v5litepod-16, got '$accelerator_type'"
    if [[ -z $runtime_version ]]; then
      runtime_version=$(default_runtime_version "$accelerator_type")
    fi
    cmd=("${gcloud_tpu[@]}" create "$name" "${location[@]}"
         "--accelerator-type=$accelerator_type" "--version=$runtime_version")
    if [[ -n $capacity ]]; then
      cmd+=("$capacity")
    fi
    run "${cmd[@]}"
    ;;

  setup)
    if [[ -z $jax_version ]]; then
      jax_version=$(pinned_jax_version "$root")
    fi
    # Stage the checkout's files (tracked and untracked, minus what .gitignore drops: .venv,
    # runs/, data/) in a directory named like the remote checkout, then copy it to every worker.
    stage_parent=$(mktemp -d)
    trap 'rm -rf "$stage_parent"' EXIT
    stage="$stage_parent/$remote_dir"
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      run_sh "mkdir -p $(shq "$stage") && cd $(shq "$root") && git ls-files -z --cached --others --exclude-standard | tar --null --files-from=- -cf - | tar -xf - -C $(shq "$stage")"
    else
      run_sh "mkdir -p $(shq "$stage") && cd $(shq "$root") && tar --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./data -cf - . | tar -xf - -C $(shq "$stage")"
    fi
    run "${gcloud_tpu[@]}" scp --recurse "$stage" "$name:" "${location[@]}" --worker=all
    # TPU images ship Ubuntu 22.04 (Python 3.10); jax 0.11 needs Python >= 3.11.
    install_python="command -v $(shq "$python") >/dev/null || { sudo add-apt-repository -y ppa:deadsnakes/ppa && sudo apt-get -o DPkg::Lock::Timeout=600 update && sudo apt-get -o DPkg::Lock::Timeout=600 install -y $(shq "$python") $(shq "$python")-venv; }"
    packages=(-e . "jax[tpu]==$jax_version" ${extra_pip[@]+"${extra_pip[@]}"})
    tpu_ssh all "$install_python && cd $remote_dir && { [ -x .venv/bin/python ] || $(shq "$python") -m venv .venv; } && .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q $(shjoin "${packages[@]}") && .venv/bin/python -c 'import jax; print(jax.__version__)'"
    ;;

  run)
    require "$config" --config CONFIG run
    require "$workdir" --workdir WORKDIR run
    if [[ $workdir != gs://* ]]; then
      warn "--workdir=$workdir is not a gs:// path: on a multi-worker slice it must be storage every worker shares"
    fi
    main=(.venv/bin/python -m lazy_jax.main "--config=$config" "--workdir=$workdir" --multihost ${main_args[@]+"${main_args[@]}"})
    pid=${log%.log}.pid
    # nohup + redirected stdin/stdout lets the ssh session end while training goes on;
    # jax.distributed.initialize() finds the coordinator and worker ids from TPU metadata.
    tpu_ssh all "cd $remote_dir && mkdir -p $(shq "$(dirname "$log")") && $(exports_prefix ${env_kv[@]+"${env_kv[@]}"}){ nohup $(shjoin "${main[@]}") > $(shq "$log") 2>&1 < /dev/null & echo \$! > $(shq "$pid"); }"
    [[ $DRY_RUN == 1 ]] || echo "started on all workers; follow with: launch/tpu_vm.sh logs --name=$name --zone=$zone" >&2
    ;;

  logs)
    tpu_ssh 0 "tail -n +1 -F $(shq "$remote_dir/$log")"
    ;;

  copy-back)
    require "$workdir" --workdir WORKDIR copy-back
    run mkdir -p "$dest"
    if [[ $workdir == gs://* ]]; then
      run gcloud storage cp -r "$workdir" "$dest/"
    else
      run "${gcloud_tpu[@]}" scp --recurse "$name:$(remote_workdir_path)" "$dest/" "${location[@]}" --worker=0
    fi
    run "${gcloud_tpu[@]}" scp "$name:$remote_dir/$log" "$dest/" "${location[@]}" --worker=0
    ;;

  stop)
    pid=${log%.log}.pid
    tpu_ssh all "cd $remote_dir && if [ -f $(shq "$pid") ]; then kill \$(cat $(shq "$pid")) 2>/dev/null || true; rm -f $(shq "$pid"); fi"
    ;;

  delete)
    run "${gcloud_tpu[@]}" delete "$name" "${location[@]}" --quiet
    ;;
esac
