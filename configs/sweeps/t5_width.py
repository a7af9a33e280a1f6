"""T5 MLP width: the same T5 with a wider or narrower MLP (d_ff; the paper: wider MLPs are sparser).

Local (default): configs/t5.py:local (128 wide, 2+2 layers, on pydocs span corruption, 500
steps of batch 32) with d_ff 256, 512 (the local default), 1024 and 2048; estimated (the local
run's ~3 minutes, README, scaled by forward FLOPs; not measured) 2.5 to 7 minutes each on 2 idle
CPU cores:
  python -m lazy_jax.sweep --sweep=configs/sweeps/t5_width.py --workdir=runs/t5_width
  python -m lazy_jax.report --compare runs/t5_width
compare/final_nonzero_frac.png has one panel per stack (encoder, decoder) with each layer's
final nonzero share against d_ff; the paper's trend is a lower share for the wider MLPs.
On one H200 (`launch/results.sh`, eight sweeps side by side, 310 s for all; docs/results.md): eval nonzero 40.8 / 48.1 /
40.8 / 41.2% for d_ff 256 ... 2048: no trend after 500 AdamW steps.

Full (`:full`): configs/t5.py (T5-Base on C4) with d_ff 1536, 3072 (Base's), 6144 and 12288.

Test (`:test`): d_ff 64 and 32 on configs/t5.py:test (32 wide, 2+2 layers, 6 steps on pydocs); the
first member is configs/t5.py:test's own shape, whose programs the tests' smoke run shares.
"""

from lazy_jax.config_base import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    base, widths = "configs/t5.py:local", (256, 512, 1024, 2048)
    if a.test:
        base, widths = "configs/t5.py:test", (64, 32)
    elif a.full:
        base, widths = "configs/t5.py", (1536, 3072, 6144, 12288)
    return base, {f"dff{f}": {"model.d_ff": f} for f in widths}
