"""Checks a config before any work is done; each error names the value and what is allowed.

Unknown keys are refused by ml_collections itself (configs are locked); this checks values.
Dataset names are checked by the data layer, the mesh against the devices by `sharding`, and
config.model by its spec builder (`lazy_jax.models.model_spec`, called by `get_model`).

The `--config` flag of the command-line tools (`define_config_flag`, `parse_flags`) loads the
config file itself: a missing file, a syntax error, a get_config that raises or returns no
ConfigDict is one line `error: ...` naming the file (exit 2), not a traceback from inside absl.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import textwrap
import traceback

import ml_collections
from absl import flags
from ml_collections import config_flags

from lazy_jax.data import corruptions
from lazy_jax.errors import InputError
from lazy_jax.optim import OPTIMIZERS, SCHEDULES
from lazy_jax.tasks import TASKS


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{name}={value!r} is not allowed: use a positive integer")


FLOAT32_MAX = 3.4028234663852886e38  # larger values overflow to inf in the float32 optimizer state
# jax.random.key keeps the low 32 bits of a seed (without jax_enable_x64): 2**32 is the key of 0,
# and seeds past int64 overflow; numpy's generators refuse negatives.
SEED_LIMIT = 2**32


def _seed(name: str, value, why: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEED_LIMIT:
        raise InputError(
            f"{name}={value!r} is not allowed: use an integer 0 <= {name.rpartition('.')[2]} < 2**32 ({why})"
        )


def validate_config(config) -> None:
    _seed("seed", config.seed, "jax.random.key keeps 32 bits: a larger seed would give the key of a smaller one")
    if "shuffle_seed" in config.data:
        _seed("data.shuffle_seed", config.data.shuffle_seed, "the range of seed")
    if config.task not in TASKS:
        raise InputError(f"task={config.task!r} is unknown; allowed: {list(TASKS)}")
    # A task needs its kind of data config: image fields for classification, text for seq2seq.
    needed = {"classification": "image_size", "seq2seq": "inputs_length"}[config.task]
    if needed not in config.data:
        raise InputError(
            f"task={config.task!r} does not fit this config's data (config.data has no {needed!r}); use a config "
            f"file made for it: configs/t5.py for 'seq2seq', configs/vit.py, mixer.py or mlp.py for 'classification'"
        )
    for name in (
        "batch_size",
        "eval_batch_size",
        "total_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    ):
        _positive_int(name, config[name])
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise InputError(f"optimizer.name={opt.name!r} is unknown; allowed: {list(OPTIMIZERS)}")
    if opt.schedule not in SCHEDULES:
        raise InputError(f"optimizer.schedule={opt.schedule!r} is unknown; allowed: {list(SCHEDULES)}")
    for name in ("learning_rate", "grad_clip_norm", "weight_decay"):
        v = opt[name]
        if (
            not isinstance(v, (int, float))
            or not math.isfinite(v)
            or v < 0
            or v > FLOAT32_MAX
            or (name == "learning_rate" and v == 0)
        ):
            raise InputError(
                f"optimizer.{name}={v!r} is not allowed: use a finite float32 number "
                f"{'> 0' if name == 'learning_rate' else '>= 0'}"
            )
    for name in ("b1", "b2"):
        if name in opt and (not isinstance(opt[name], (int, float)) or not 0.0 <= opt[name] < 1.0):
            raise InputError(f"optimizer.{name}={opt[name]!r} is not allowed: use 0 <= {name} < 1")
    if "end_lr_frac" in opt and (not isinstance(opt.end_lr_frac, (int, float)) or not 0.0 <= opt.end_lr_frac <= 1.0):
        raise InputError(f"optimizer.end_lr_frac={opt.end_lr_frac!r} is not allowed: use 0 <= end_lr_frac <= 1")
    if not isinstance(opt.warmup_steps, int) or opt.warmup_steps < 0:
        raise InputError(f"optimizer.warmup_steps={opt.warmup_steps!r} is not allowed: use an integer >= 0")
    if not isinstance(config.z_loss, (int, float)) or not math.isfinite(config.z_loss) or config.z_loss < 0:
        raise InputError(f"z_loss={config.z_loss!r} is not allowed: use a finite number >= 0")
    _check_corruptions(config)


def _check_corruptions(config) -> None:
    """eval_corruptions: known names at known severities, and only for image tasks."""
    names = corruptions.parse_names(config.get("eval_corruptions", ""))
    corruptions.parse_severities(config.get("eval_corruption_severities", "1,2,3,4,5"))
    if names and config.task != "classification":
        raise InputError(
            f"eval_corruptions={config.eval_corruptions!r} is not allowed for task={config.task!r}: the corruptions "
            "are of images (ImageNet-C); use eval_corruptions='' for text"
        )


# ----------------------------------------------------------------------------- the --config flag


def _problem(error: BaseException, path: str) -> str:
    """'TypeError: ... (line N)' on one line, N the innermost line of the config file `path` in its traceback."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == path]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {' '.join(str(error).split())}{where}"


def load_config_file(spec: str, name: str = "config") -> ml_collections.ConfigDict:
    """'configs/vit.py:local' -> the file's get_config('local'), locked; every failure an InputError
    naming the flag `--<name>`, the file and the problem.

    As ml_collections' config_flags: everything after the first ':' is get_config's argument.
    """
    path, colon, arg = spec.partition(":")
    flag = f"--{name}={spec}"
    if not os.path.isfile(path):
        directory = os.path.dirname(path) or "."
        found = sorted(f for f in os.listdir(directory) if f.endswith(".py")) if os.path.isdir(directory) else []
        why = "is a directory" if os.path.isdir(path) else "does not exist"
        raise InputError(
            f"{flag}: the config file {path!r} {why} (relative paths are from the current directory); "
            f"config files in {directory!r}: {found or 'none'}"
        )
    absolute = os.path.abspath(path)
    module_name = f"{name}_config"
    module_spec = importlib.util.spec_from_file_location(module_name, absolute)
    if module_spec is None:
        raise InputError(f"{flag}: {path!r} cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # as ml_collections' loader does (dataclasses in a config look it up)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        if e.filename and os.path.abspath(e.filename) == absolute:
            raise InputError(f"{flag}: the config file {path!r} has a syntax error at line {e.lineno}: {e.msg}") from e
        raise InputError(f"{flag}: the config file {path!r} failed to load: {_problem(e, absolute)}") from e
    except Exception as e:  # whatever the file raises on import is the file's fault
        raise InputError(f"{flag}: the config file {path!r} failed to load: {_problem(e, absolute)}") from e
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise InputError(f"{flag}: the config file {path!r} defines no get_config() function")
    try:
        config = get_config(*([arg] if colon else []))
    except InputError as e:
        raise InputError(f"{flag}: {e}") from e
    except Exception as e:  # as is whatever its get_config raises
        call = f"get_config({arg!r})" if colon else "get_config()"
        raise InputError(f"{flag}: {call} of {path!r} raised {_problem(e, absolute)}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise InputError(
            f"{flag}: get_config() of {path!r} returned {type(config).__name__}, not an ml_collections.ConfigDict"
        )
    config.lock()
    return config


class _ConfigFileParser(flags.ArgumentParser):
    """The parser of a config-file flag (as ml_collections' own, which is private), with `load_config_file`'s errors."""

    def __init__(self, name: str):
        self.name = name

    def parse(self, argument):
        return load_config_file(argument, self.name)

    def flag_type(self):
        return "config object"


def define_config_flag(name: str = "config", help_string: str = "config file, e.g. configs/vit.py:local"):
    """DEFINE_config_file (locked; `--config.key=value` overrides) whose load errors are InputErrors."""
    holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
    flags.FLAGS[name].parser = _ConfigFileParser(name)
    return holder


def parse_flags(argv: list[str]) -> list[str]:
    """`app.run(main, flags_parser=parse_flags)`: absl's parsing, but a bad config file (an InputError
    of `load_config_file`, which absl wraps in IllegalFlagValueError) prints as one line `error: ...`, exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.IllegalFlagValueError as e:
        if isinstance(e.__context__, InputError):
            print(f"error: {e.__context__}", file=sys.stderr)
            sys.exit(2)
        error = e
    except flags.Error as e:
        error = e
    # Any other flag error: absl's own message and exit status (absl.app.parse_flags_with_usage).
    message = str(error)
    if "\n" in message:
        print(f"FATAL Flags parsing error:\n{textwrap.indent(message, '  ')}", file=sys.stderr)
    else:
        print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    print("Pass --helpshort or --helpfull to see help on flags.", file=sys.stderr)
    sys.exit(1)
