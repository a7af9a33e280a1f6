"""Top-k: the same ViT dense and with Top-k in every MLP (the paper's Top-k Transformers).

Local (default): configs/vit.py:local (ViT-Mu/7, d_ff 512, on mnist5k, 1200 steps of batch 64)
dense (topk 0) and with k = 16, 32, 64 and 128; about the local run's 2.5 minutes each (Top-k adds
its bisection; estimated, not measured) on 2 idle CPU cores:
  python -m lazy_jax.sweep --sweep=configs/sweeps/vit_topk.py --workdir=runs/vit_topk
  python -m lazy_jax.report --compare runs/vit_topk
Each Top-k member's nonzero share should stay at k / 512 or under (above only where values tie)
from the first step, the dense one falls from ~50%; compare.md sets their accuracies side by side
(the paper: a small k costs little accuracy), and the FLOP table the share W_out could skip.
On one H200 (`launch/results.sh`, eight sweeps side by side, 310 s for all; docs/results.md): accuracy 87.9% dense,
87.6 / 87.6 / 89.3 / 89.8% for k = 16 / 32 / 64 / 128, all within run-to-run noise.

Full (`:full`): configs/vit.py (ViT-B/16 on ImageNet-21k, d_ff 3072) dense and with k = 64,
128 and 256.

Test (`:test`): dense and k = 8 on configs/vit.py:test (6 steps on digits, d_ff 64).
"""

from lazy_jax.config_base import parse_arg


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    if a.test:
        tiny = {"model.width": 32, "model.num_heads": 2, "model.depth": 2, "model.d_ff": 64}
        return "configs/vit.py:test", {_name(k): {**tiny, "model.topk": k} for k in (0, 8)}
    if a.full:
        return "configs/vit.py", {_name(k): {"model.topk": k} for k in (0, 64, 128, 256)}
    return "configs/vit.py:local", {_name(k): {"model.topk": k} for k in (0, 16, 32, 64, 128)}


def _name(k: int) -> str:
    return f"top{k}" if k else "dense"
