# Helpers shared by launch/tpu_vm.sh and launch/gpu_host.sh (sourced, not run): command
# tracing, quoting and the subcommand and flag parsing.
#
# Every command a launcher runs goes through `run` (an argv) or `run_sh` (a shell string for
# pipelines), which print it as one line "+ CMD" with shell quoting, so that `--dry-run`
# output can be read, tested and pasted. With DRY_RUN=1 nothing is executed.
# shellcheck shell=bash

DRY_RUN=${DRY_RUN:-0}

die() {
  echo "error: $*" >&2
  echo "       (run with --help for usage)" >&2
  exit 2
}

warn() {
  echo "warning: $*" >&2
}

# Quote one word for a POSIX shell; plain words stay bare so the output stays readable.
shq() {
  local s=$1 sq="'"
  if [[ -n $s && $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//$sq/$sq\\$sq$sq}"
  fi
}

# Join words into one shell-quoted command line.
shjoin() {
  local out="" w
  for w in "$@"; do
    out+="${out:+ }$(shq "$w")"
  done
  printf '%s' "$out"
}

# Print a command line: to stdout in a dry run (it is the output), to stderr otherwise (a trace).
trace() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ %s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
  fi
}

run() {
  trace "$(shjoin "$@")"
  if [[ $DRY_RUN != 1 ]]; then
    "$@"
  fi
}

run_sh() {
  trace "$1"
  if [[ $DRY_RUN != 1 ]]; then
    bash -c "set -euo pipefail; $1"
  fi
}

# The jax version pinned in setup.cfg (`jax==X.Y.Z` under install_requires), so that the
# accelerator wheels installed by `setup` match what the package was tested with.
pinned_jax_version() {
  local root=$1 version
  version=$(sed -n 's/^[[:space:]]*jax==\([0-9][0-9A-Za-z.]*\).*/\1/p' "$root/setup.cfg" | head -n 1)
  [[ -n $version ]] || die "no 'jax==VERSION' pin found in $root/setup.cfg; pass --jax-version"
  printf '%s' "$version"
}

# `flag_value NAME ARG NEXT`: value of `--name=value` (from ARG) or `--name value` (NEXT).
# Sets FLAG_VALUE, and SHIFT_BY to how many arguments were consumed (read by the caller).
# shellcheck disable=SC2034
flag_value() {
  local name=$1 arg=$2
  if [[ $arg == *=* ]]; then
    FLAG_VALUE=${arg#*=}
    SHIFT_BY=1
  elif [[ $# -ge 3 && $3 != -* ]]; then
    FLAG_VALUE=$3
    SHIFT_BY=2
  else
    die "$name needs a value ($name=VALUE)"
  fi
  [[ -n $FLAG_VALUE ]] || die "$name needs a non-empty value"
}

# `parse_subcommand WORD ALLOWED...`: the subcommand, the first argument of every launcher.
# -h/--help prints the caller's `usage` and exits 0; a missing or unknown one exits 2.
parse_subcommand() {
  local _word=$1 _list _allowed
  shift
  printf -v _list '%s, ' "$@"
  _list=${_list%, }
  case "$_word" in
    -h|--help) usage; exit 0 ;;
    ""|-*) usage >&2; die "missing subcommand: it comes first ($_list)" ;;
  esac
  for _allowed in "$@"; do
    [[ $_word != "$_allowed" ]] || return 0
  done
  usage >&2
  die "unknown subcommand '$_word' (allowed: $_list)"
}

# `parse_flags SUBCOMMAND SPEC... -- ARGS...`: the launchers' flags. Each SPEC names a flag and
# the caller's variable it sets:
#   --flag=var     a value, as --flag=VALUE or --flag VALUE
#   --flag=var[]   a repeatable value, appended to the array var
#   --flag:var=V   a switch: var=V
# Every launcher also takes --config.KEY=VALUE and anything after `--` (appended to the
# caller's array main_args, for lazy_jax.main), --dry-run, and -h/--help (the caller's `usage`).
# Locals start with _ so that they never shadow the caller's variables (name, log, ...).
parse_flags() {
  local _subcommand=$1 _specs=() _spec _var _found
  shift
  while [[ $# -gt 0 && $1 != -- ]]; do
    _specs+=("$1")
    shift
  done
  shift
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --config.*=*) main_args+=("$1"); shift; continue ;;
      --dry-run) DRY_RUN=1; shift; continue ;;
      -h|--help) usage; exit 0 ;;
      --) shift; main_args+=("$@"); return 0 ;;
    esac
    _found=0
    for _spec in "${_specs[@]}"; do
      if [[ $_spec == *:* ]]; then
        [[ $1 == "${_spec%%:*}" ]] || continue
        _var=${_spec#*:}
        printf -v "${_var%%=*}" '%s' "${_var#*=}"
        SHIFT_BY=1
      else
        [[ $1 == "${_spec%%=*}" || $1 == "${_spec%%=*}"=* ]] || continue
        flag_value "${_spec%%=*}" "$@"
        _var=${_spec#*=}
        if [[ $_var == *'[]' ]]; then
          eval "${_var%'[]'}+=(\"\$FLAG_VALUE\")"
        else
          printf -v "$_var" '%s' "$FLAG_VALUE"
        fi
      fi
      _found=1
      break
    done
    [[ $_found == 1 ]] \
      || die "unknown flag '$1' for '$_subcommand' (config overrides are --config.KEY=VALUE; other lazy_jax.main flags go after --)"
    shift "$SHIFT_BY"
  done
}

require() {
  local value=$1 flag=$2 env=$3 subcommand=$4
  [[ -n $value ]] || die "'$subcommand' needs $flag (or \$$env)"
}

# Every --env value must be KEY=VALUE; checked right after parsing, because exports_prefix runs
# inside $(...), where its `die` cannot stop the script.
check_env_kv() {
  local kv
  for kv in "$@"; do
    [[ $kv == [A-Za-z_]*=* ]] || die "--env wants KEY=VALUE, got '$kv'"
  done
}

# Shell line that exports KEY=VALUE pairs, e.g. "export A=1 B='x y' && " ('' for none).
exports_prefix() {
  local kv out=""
  for kv in "$@"; do
    [[ $kv == [A-Za-z_]*=* ]] || die "--env wants KEY=VALUE, got '$kv'"
    out+=" ${kv%%=*}=$(shq "${kv#*=}")"
  done
  if [[ -n $out ]]; then
    printf 'export%s && ' "$out"
  fi
}
