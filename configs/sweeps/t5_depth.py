"""T5 depth: the same T5 with more or fewer encoder and decoder layers (the paper: deeper is sparser).

Local (default): configs/t5.py:local (128 wide, d_ff 512, on pydocs span corruption, 500 steps
of batch 32) with 1+1, 2+2 (the local default) and 4+4 layers; estimated (the local run's ~3
minutes, README, scaled by forward FLOPs; not measured) about 2, 3 and 5.5 minutes on 2 idle CPU
cores:
  python -m lazy_jax.sweep --sweep=configs/sweeps/t5_depth.py --workdir=runs/t5_depth
  python -m lazy_jax.report --compare runs/t5_depth
compare/final_nonzero_frac.png has one panel per stack (encoder, decoder) with each layer's
final nonzero share against the depth; the paper's trend is a lower share for deeper models.
On one H200 (`launch/results.sh`, eight sweeps side by side, 310 s for all; docs/results.md): eval nonzero 46.4 / 42.0 /
35.9% for 1+1 / 2+2 / 4+4 layers: the trend, but 500 AdamW steps leave every T5 dense.

Full (`:full`): configs/t5.py (T5-Base on C4) with 6+6, 12+12 (Base's) and 24+24 layers.

Test (`:test`): 2+2 and 1+1 layers on configs/t5.py:test (32 wide, 6 steps on pydocs); the first
member is configs/t5.py:test's own shape, whose programs the tests' smoke run shares.
"""

from lazy_jax.config_base import parse_arg


def _layers(n: int) -> dict:
    return {"model.num_encoder_layers": n, "model.num_decoder_layers": n}


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    base, depths = "configs/t5.py:local", (1, 2, 4)
    if a.test:
        base, depths = "configs/t5.py:test", (2, 1)
    elif a.full:
        base, depths = "configs/t5.py", (6, 12, 24)
    return base, {f"layers{n}": _layers(n) for n in depths}
