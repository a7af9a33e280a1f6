"""Depth: the same ViT with more or fewer layers (the paper: deeper Transformers are sparser).

Local (default): configs/vit.py:local (ViT-Mu/7, 128 wide, d_ff 512, on mnist5k, 1200 steps of
batch 64) with 2, 4, 6 (the local default), 8 and 12 layers; estimated (the local run's ~2.5
minutes scaled by depth, not measured) about 13 minutes in all on 2 idle CPU cores:
  python -m lazy_jax.sweep --sweep=configs/sweeps/vit_depth.py --workdir=runs/vit_depth
  python -m lazy_jax.report --compare runs/vit_depth
compare/final_nonzero_frac.png puts each layer's final nonzero share against the depth and
compare/final_per_layer.png each member's shares along its layers; the paper's trend is a lower
share for the deeper models.
On one H200 (`launch/results.sh`, eight sweeps side by side, 310 s for all; docs/results.md): eval nonzero 21.0 / 17.7 /
17.4 / 15.2 / 13.7% for 2 ... 12 layers (layers 7-11 of the deepest at 3.8-4.5%).

Full (`:full`): configs/vit.py (ViT-B/16 on ImageNet-21k) with 6, 12 (B/16's), 18 and 24 layers.

Test (`:test`): two tiny members on configs/vit.py:test (6 steps on digits), 2 and 1 layers; the
first is the tiny ViT of the other sweeps' tests, whose programs the tests' smoke run shares.
"""

from lazy_jax.config_base import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    if a.test:
        tiny = {"model.width": 32, "model.num_heads": 2, "model.d_ff": 64}
        return "configs/vit.py:test", {f"depth{n}": {**tiny, "model.depth": n} for n in (2, 1)}
    if a.full:
        return "configs/vit.py", {f"depth{n}": {"model.depth": n} for n in (6, 12, 18, 24)}
    return "configs/vit.py:local", {f"depth{n}": {"model.depth": n} for n in (2, 4, 6, 8, 12)}
