"""The default run's learning rate: how the schedule decides whether sparsity keeps emerging.

Local (default, the only size): configs/vit.py:local (ViT-Mu/7 on mnist5k, 1200 steps of batch
64, AdamW) with six learning-rate schedules; each run took ~2.5 minutes of CPU time on 2 cores:
  python -m lazy_jax.sweep --sweep=configs/sweeps/vit_local_lr.py --workdir=runs/vit_local_lr
  python -m lazy_jax.report --compare runs/vit_local_lr
What it gave (docs/results.md, "The default run"): the nonzero share follows the learning rate.
A constant 3e-3 fell to 12.7% (eval, step 1200) but reached only 81% accuracy; constant 2e-3 (the
default since) fell at every eval to 17.3% at 87.5%; 1e-3 stayed at 30.8%; cosine decay to 0 fell
to ~20% by step 600 and rose again to 24% as the rate decayed and the 4000 images were memorised.

Full (`:full`): the same schedules on configs/vit.py (ViT-B/16 on ImageNet-21k); not run.

Test (`:test`): two tiny members on configs/vit.py:test (6 steps on digits).
"""

from lazy_jax.config_base import parse_arg

_SCHEDULES = {
    "cosine_3e-3": {"optimizer.schedule": "warmup_cosine", "optimizer.learning_rate": 3e-3},
    "cosine_3e-3_end0.3": {
        "optimizer.schedule": "warmup_cosine",
        "optimizer.learning_rate": 3e-3,
        "optimizer.end_lr_frac": 0.3,
    },
    "rsqrt_3e-3": {"optimizer.schedule": "rsqrt", "optimizer.learning_rate": 3e-3},
    "constant_3e-3": {"optimizer.schedule": "constant", "optimizer.learning_rate": 3e-3},
    "constant_2e-3": {"optimizer.schedule": "constant", "optimizer.learning_rate": 2e-3},
    "constant_1e-3": {"optimizer.schedule": "constant", "optimizer.learning_rate": 1e-3},
}


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    if a.test:
        tiny = {"model.width": 32, "model.num_heads": 2, "model.depth": 2, "model.d_ff": 64}
        return "configs/vit.py:test", {k: {**tiny, **_SCHEDULES[k]} for k in ("cosine_3e-3", "constant_2e-3")}
    return ("configs/vit.py" if a.full else "configs/vit.py:local"), dict(_SCHEDULES)
