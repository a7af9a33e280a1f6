"""Sweeps: train a set of configs, each member in its own workdir, resumable.

    python -m lazy_jax.sweep --sweep=configs/sweeps/vit_size.py --workdir=runs/vit_size \\
        [--only=NAME] [--config.key=value ...]
    python -m lazy_jax.report --compare runs/vit_size     # figures and a table side by side

A sweep file (as in big_vision) defines `get_sweep(arg=None)` returning the base config spec
and the members, an ordered mapping of name -> overrides of dotted config keys:

    def get_sweep(arg=None):
        return "configs/vit.py:local", {"Mu": {"model.variant": "Mu/7"}, "S": {"model.variant": "S/7"}}

`--sweep=FILE:ARG` passes ARG (every file under configs/sweeps/ takes `test`: tiny members for
the tests). Member NAME trains in WORKDIR/NAME/ with `lazy_jax.run.train_and_evaluate`, one
after the other in this process, in the file's order:
- a member whose metrics.jsonl has the eval row of its last step is finished and skipped; any
  other resumes from its workdir's checkpoint (or starts);
- `--only=NAME` trains that member alone;
- `--config.key=value` (parsed as `lazy_jax.main` parses them, on the base config) applies to
  every member after its own overrides; it may not set a key the members vary (they would no
  longer differ in it), and overrides one they all set alike;
- every member's config is built and checked (keys, values, data, model) before the first run:
  a member setting a key the base config lacks is refused naming the member and the key, and
  nothing is written;
- WORKDIR/sweep.json records the sweep file, the base config and every member's overrides
  (and the extra overrides of the last invocation); a member that already has a workdir must
  keep the overrides recorded there (else: refused, use another --workdir).
A run stopped by SIGTERM (preemption) stops the sweep; rerunning the command continues it.
WORKDIR may be gs://BUCKET/PATH (etils.epath paths, as the trainer's workdirs); the sweep file
and the config files it names are local.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections
from etils import epath

from lazy_jax import workdir as wd
from lazy_jax import xla_flags
from lazy_jax.errors import InputError

SWEEP_JSON = "sweep.json"  # in the sweep's workdir: the members and their overrides
COMPARE_DIR = "compare"  # in the sweep's workdir: compare.md and its figures (lazy_jax.compare)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


@dataclasses.dataclass(frozen=True)
class Sweep:
    spec: str  # the sweep file, with its argument after ':'
    base: str  # the config spec every member starts from, e.g. 'configs/vit.py:local'
    members: dict[str, dict[str, Any]]  # name -> {dotted key: value}, in the file's order


def load_sweep(spec: str) -> Sweep:
    """'configs/sweeps/vit_size.py:test' -> that file's get_sweep('test'), checked."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise InputError(f"sweep file {path!r} not found (paths are relative to the current directory)")
    module_spec = importlib.util.spec_from_file_location(f"lazy_jax_sweep_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_sweep", None)):
        raise InputError(f"sweep file {path!r} defines no get_sweep(arg=None)")
    out = module.get_sweep(arg or None)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], str) and isinstance(out[1], Mapping)):
        raise InputError(
            f"{spec}: get_sweep returned {type(out).__name__}; it must return (base config spec, {{name: overrides}})"
        )
    base, members = out
    if not members:
        raise InputError(f"{spec}: the sweep has no members")
    config_path = base.partition(":")[0]
    if not Path(config_path).is_file():
        raise InputError(f"{spec}: base config file {config_path!r} not found (relative to the current directory)")
    for name, overrides in members.items():
        if not isinstance(name, str) or not _NAME_RE.match(name) or name == COMPARE_DIR:
            raise InputError(
                f"{spec}: member name {name!r} is not allowed: use letters, digits and _ . + = - "
                f"(not starting with a symbol), and not {COMPARE_DIR!r}"
            )
        if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
            raise InputError(f"{spec}: member {name!r} has {overrides!r}; use a dict of dotted config keys to values")
    return Sweep(spec, base, {name: dict(overrides) for name, overrides in members.items()})


def _set(config, key: str, value: Any, who: str, base: str) -> None:
    """config[key] = value for a dotted key the config already has; InputError naming `who` otherwise."""
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(parts[:depth]) or "the top level"
            allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise InputError(f"{who} sets {key!r}, which {base} does not have ({where} has {allowed})")
        if depth < len(parts) - 1:
            node = node[part]
    try:
        node[parts[-1]] = value
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise InputError(f"{who} sets {key}={value!r}, which {base} refuses: {e}") from None


def member_configs(sweep: Sweep, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{name: locked ConfigDict}: the base config with the member's overrides, then `extra`."""
    from lazy_jax.config_base import load_config

    extra = dict(extra or {})
    for key in extra:
        values = {name: o.get(key, "(the base's)") for name, o in sweep.members.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            raise InputError(
                f"--config.{key} is not allowed: the members of {sweep.spec} vary it ({values}); "
                "extra overrides apply to every member alike"
            )
    configs = {}
    for name, overrides in sweep.members.items():
        config = load_config(sweep.base)
        for key, value in overrides.items():
            _set(config, key, value, f"member {name!r} of {sweep.spec}", sweep.base)
        for key, value in extra.items():
            _set(config, key, value, f"--config.{key}", sweep.base)
        configs[name] = config
    return configs


def check_member(name: str, config) -> None:
    """The checks `train_and_evaluate` makes before touching a workdir (`run.check_run`), named by member."""
    from lazy_jax.run import check_run

    try:
        check_run(config)
    except InputError as e:
        raise InputError(f"member {name!r}: {e}") from None


def is_finished(config, run_dir: wd.PathLike) -> bool:
    """True when the run's metrics.jsonl holds the eval row of its last step (config.total_steps)."""
    if not (epath.Path(run_dir) / wd.METRICS).is_file():
        return False
    return any(r["split"] == "eval" and _int(r["step"]) == config.total_steps for r in wd.read_metrics(run_dir))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _check_recorded(workdir: epath.Path, sweep: Sweep) -> None:
    """A member that already trained in `workdir` must keep the base and the overrides sweep.json recorded."""
    path = workdir / SWEEP_JSON
    if not path.is_file():
        return
    try:
        recorded = json.loads(wd.read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e}); move it away to start the sweep's record afresh") from None
    for name, overrides in sweep.members.items():
        if not (workdir / name).is_dir() or name not in recorded.get("members", {}):
            continue
        before = (recorded.get("base"), recorded["members"][name])
        now = (sweep.base, _jsonable(overrides))
        if before != now:
            raise InputError(
                f"member {name!r} already trained in {workdir / name} as {before[0]} with {before[1]}; "
                f"{sweep.spec} now makes it {now[0]} with {now[1]}: use another --workdir"
            )


def _write_json(path: epath.Path, value: Any) -> None:
    # whole or not at all: a killed run leaves the previous record
    wd.replace_text(path, json.dumps(value, indent=2, default=str) + "\n")


def run_sweep(
    spec: str,
    workdir: wd.PathLike,
    *,
    only: str | None = None,
    extra: Mapping[str, Any] | None = None,
    train: Callable | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Trains the sweep's members (or `only`) in WORKDIR/<name>/; returns {name: what happened}.

    What happened: 'finished before' (skipped), 'trained', 'resumed' (from a checkpoint in its
    workdir), 'preempted at step N' (the sweep stops there). `train(config, workdir)` defaults
    to `lazy_jax.run.train_and_evaluate`.
    """
    workdir = wd.checked_workdir(workdir)  # local or gs://; empty, a file, read-only: InputError
    sweep = load_sweep(spec)
    if only is not None and only not in sweep.members:
        raise InputError(f"--only={only!r} is not a member of {spec}; allowed: {list(sweep.members)}")
    configs = member_configs(sweep, extra)
    selected = [only] if only is not None else list(sweep.members)
    todo = [n for n in selected if not is_finished(configs[n], workdir / n)]
    for name in todo:
        check_member(name, configs[name])
    _check_recorded(workdir, sweep)

    if train is None:
        from lazy_jax.run import train_and_evaluate as train
    if not wd.is_remote(workdir):  # an object store has no directories to make
        workdir.mkdir(parents=True, exist_ok=True)
    record = {"sweep": spec, "base": sweep.base, "members": sweep.members, "extra": dict(extra or {})}
    _write_json(workdir / SWEEP_JSON, _jsonable(record))
    status = {}
    for i, name in enumerate(selected, start=1):
        what = ", ".join(f"{k}={v!r}" for k, v in sweep.members[name].items()) or "the base config"
        head = f"sweep {workdir}: member {i}/{len(selected)} {name!r} ({what})"
        if name not in todo:
            status[name] = "finished before"
            echo(f"{head}: finished before, skipped")
            continue
        run_dir = workdir / name
        resumed = (run_dir / wd.CHECKPOINTS_DIR).is_dir() and any((run_dir / wd.CHECKPOINTS_DIR).iterdir())
        echo(f"{head}: {'resuming' if resumed else 'training'} in {run_dir}")
        result = train(configs[name], run_dir)
        if isinstance(result, dict) and result.get("preempted_at") is not None:
            status[name] = f"preempted at step {result['preempted_at']}"
            echo(f"{head}: preempted at step {result['preempted_at']}; rerun the command to continue the sweep")
            break
        status[name] = "resumed" if resumed else "trained"
    return status


# ----------------------------------------------------------------------------- CLI


def _flag_value(argv: list[str], name: str) -> str | None:
    """The value of --name=V or --name V in argv (read before absl parses, to find the base config)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def main(argv: list[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments: {argv[1:]}")
    if FLAGS["config"].present:
        from ml_collections import config_flags

        given = config_flags.get_config_filename(FLAGS["config"])
        _exit(f"--config={given} is not allowed: the sweep file names the base config; pass --config.key=value")
    try:
        status = run_sweep(FLAGS.sweep, FLAGS.workdir, only=FLAGS.only, extra=FLAGS["config"].override_values)
    except (InputError, FloatingPointError) as e:
        _exit(str(e))
    print(f"sweep {FLAGS.workdir}: " + ", ".join(f"{n} {s}" for n, s in status.items()), flush=True)


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    xla_flags.apply()  # before the first computation initialises a backend
    from absl import app, flags, logging
    from ml_collections import config_flags

    flags.DEFINE_string("sweep", None, "sweep file, e.g. configs/sweeps/vit_size.py or configs/sweeps/vit_size.py:test")
    flags.DEFINE_string("workdir", None, "the sweep's directory: member NAME trains in WORKDIR/NAME/")
    flags.DEFINE_string("only", None, "train this member alone")
    flags.mark_flags_as_required(["sweep", "workdir"])
    # --config.key=value are parsed on the base config the sweep file names, as lazy_jax.main parses them.
    sweep_spec = _flag_value(sys.argv, "sweep")
    try:
        base = load_sweep(sweep_spec).base if sweep_spec else None
    except InputError as e:
        _exit(str(e))
    config_flags.DEFINE_config_file("config", base, "the sweep's base config (set by the sweep file)", lock_config=True)
    logging.set_verbosity(logging.WARNING)
    app.run(main)
