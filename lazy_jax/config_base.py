"""What every experiment config shares: training loop, optimizer, mesh, data fields.

Config files under configs/ build on `base_config()` and return a locked ConfigDict, so an
unknown `--config.key` is refused by name.
"""

from __future__ import annotations

import ml_collections

from lazy_jax.errors import InputError
from lazy_jax.sharding import DEFAULT_RULES

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_arg(arg: str | None, defaults: dict) -> ml_collections.ConfigDict:
    """'local,variant=S/16,topk=64' -> defaults updated; a bare word sets it True. Unknown keys fail."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        if key not in out:
            raise InputError(f"config argument {key!r} is unknown; allowed: {sorted(out)}")
        if not eq:
            out[key] = True
        elif isinstance(out[key], bool):
            # Only true/false words: `local=on` must not silently train the full-size config.
            if value.lower() not in _BOOL_WORDS:
                raise InputError(f"config argument {key}={value!r} is not allowed: use one of {sorted(_BOOL_WORDS)}")
            out[key] = _BOOL_WORDS[value.lower()]
        elif isinstance(out[key], int):
            try:
                out[key] = int(value)
            except ValueError:
                raise InputError(f"config argument {key}={value!r} is not allowed: use an integer") from None
        else:
            out[key] = value
    return ml_collections.ConfigDict(out)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = "classification"  # or 'seq2seq'
    c.batch_size = 128  # global, over all devices and processes
    c.eval_batch_size = 256
    c.total_steps = 1000
    c.log_every_steps = 50
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    c.z_loss = 0.0
    # ImageNet-C corruptions of the eval images (lazy_jax.data.corruptions), at the final eval
    # only: each (corruption, severity) is a full pass over the eval split, 15 of them for three
    # corruptions, so every eval would cost 16 times as much; the paper reports them once, at the
    # end of training. Comma-separated names, '' = none.
    c.eval_corruptions = ""
    c.eval_corruption_severities = "1,2,3,4,5"
    c.optimizer = ml_collections.ConfigDict(
        dict(
            name="adamw",
            learning_rate=1e-3,
            b1=0.9,
            b2=0.999,
            weight_decay=1e-4,
            schedule="warmup_cosine",
            warmup_steps=100,
            end_lr_frac=0.0,
            grad_clip_norm=1.0,
        )
    )
    # Mesh sizes; -1 = all remaining devices. data x fsdp split the batch, fsdp also the weights.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
    c.logical_axis_rules = [(name, list(axes) if isinstance(axes, tuple) else axes) for name, axes in DEFAULT_RULES]
    return c


def load_config(spec: str) -> ml_collections.ConfigDict:
    """'configs/vit.py:local' -> that file's get_config('local') (for notebooks and tests)."""
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("lazy_jax_config", path)
    if module_spec is None:
        raise InputError(f"config file {path!r} cannot be loaded")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
