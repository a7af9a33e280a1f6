"""Model size: ReLU ViTs of growing size on the same data (the paper: larger Transformers are sparser).

Local (default): configs/vit.py:local (mnist5k, 1200 steps of batch 64) at ViT-Mu/7 (128 wide, 6
layers, 1.2M parameters), Ti/7 (192 wide, 12 layers, 5.4M) and S/7 (384 wide, 12 layers, 21M).
Estimated time on 2 idle CPU cores (not measured: the Mu/7 run's ~2.5 minutes, README, scaled by
forward FLOPs, 41M, 184M and 728M per image): about 2.5, 11 and 45 minutes.
  python -m lazy_jax.sweep --sweep=configs/sweeps/vit_size.py --workdir=runs/vit_size
  python -m lazy_jax.report --compare runs/vit_size
compare/final_nonzero_frac.png puts each layer's final nonzero share against the parameter
count; the paper's trend is a lower share for the larger models.
On one H200 (`launch/results.sh`, eight sweeps side by side, 310 s for all; docs/results.md): eval nonzero 17.7 / 8.3 /
9.4% at 87.2 / 76.4 / 59.4% accuracy (S/7 under-trained at Mu's learning rate).

Full (`:full`): configs/vit.py (ImageNet-21k at 224, 300k steps of batch 4096) at S/16, B/16,
L/16 and H/14, the paper's scale; B/16 should end near the paper's 6.3% nonzero.

Test (`:test`): two tiny members on configs/vit.py:test (6 steps on digits), seconds on a CPU;
the tests set data.data_dir.
"""

from lazy_jax.config_base import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    if a.test:
        tiny = {"model.num_heads": 2, "model.depth": 2}
        return "configs/vit.py:test", {
            "w32": {**tiny, "model.width": 32, "model.d_ff": 64},
            "w64": {**tiny, "model.width": 64, "model.d_ff": 128},
        }
    if a.full:
        return "configs/vit.py", {v.replace("/", "_"): {"model.variant": v} for v in ("S/16", "B/16", "L/16", "H/14")}
    return "configs/vit.py:local", {v.replace("/", "_"): {"model.variant": v} for v in ("Mu/7", "Ti/7", "S/7")}
