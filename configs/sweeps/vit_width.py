"""MLP width: the same ViT with a wider or narrower MLP (d_ff; the paper: wider MLPs are sparser).

Local (default): configs/vit.py:local (ViT-Mu/7, 128 wide, 6 layers, on mnist5k, 1200 steps of
batch 64) with d_ff 128, 256, 512 (the local default), 1024 and 2048; estimated (the local run's
~2.5 minutes scaled by forward FLOPs, not measured) 1.5 to 7 minutes each on 2 idle CPU cores:
  python -m lazy_jax.sweep --sweep=configs/sweeps/vit_width.py --workdir=runs/vit_width
  python -m lazy_jax.report --compare runs/vit_width
compare/final_nonzero_frac.png puts each layer's final nonzero share against d_ff; the paper's
trend is a lower share for the wider MLPs. Vary the model width too with
`--config.model.width=256` (then every member is 256 wide).
On one H200 (`launch/results.sh`, eight sweeps side by side, 310 s for all; docs/results.md): eval nonzero 28.7 / 21.8 /
20.6 / 13.0 / 11.1% for d_ff 128 ... 2048 (37 to 228 active neurons).

Full (`:full`): configs/vit.py (ViT-B/16 on ImageNet-21k) with d_ff 1536, 3072 (B/16's), 6144
and 12288.

Test (`:test`): two tiny members on configs/vit.py:test (6 steps on digits), d_ff 64 and 128.
"""

from lazy_jax.config_base import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    if a.test:
        tiny = {"model.width": 32, "model.num_heads": 2, "model.depth": 2}
        return "configs/vit.py:test", {f"dff{f}": {**tiny, "model.d_ff": f} for f in (64, 128)}
    if a.full:
        return "configs/vit.py", {f"dff{f}": {"model.d_ff": f} for f in (1536, 3072, 6144, 12288)}
    return "configs/vit.py:local", {f"dff{f}": {"model.d_ff": f} for f in (128, 256, 512, 1024, 2048)}
