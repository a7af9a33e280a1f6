"""T5 size: T5-Small and T5-Base shapes trained alike with T5's own optimiser (the paper: larger is sparser).

Local (default, one GPU): configs/t5.py:local (the offline pydocs corpus, span corruption,
inputs 128 / targets 29) at T5-Small (512 wide, 6+6 layers, d_ff 2048) and T5-Base (768 wide,
12+12 layers, d_ff 3072) shapes, batch 128, bf16 activations, Adafactor at a constant 0.01 (T5's
1/sqrt(max(step, 10^4)) schedule, constant before step 10^4), no dropout, evaluated every 500
steps. The length is whatever the time allows: total_steps is far beyond what one session runs,
so a run is stopped by SIGTERM (it saves its checkpoint and resumes where it stopped) and
compared by its curve of nonzero share against steps:
  python -m lazy_jax.sweep --sweep=configs/sweeps/t5_size.py --workdir=runs/t5_size
  python -m lazy_jax.report --compare runs/t5_size
On two H200s, one member each, stopped after 330 s (docs/results.md, claims 1, 2 and 7): T5-Small
reached step 6700 at 6.9% nonzero (eval mean; encoder layers 2-6 at 2.4-3.0%, the first at 25%),
T5-Base step 2639 at 8.6%, sparser than T5-Small at every eval of equal step; both still falling.
Not on a CPU: a T5-Base step of 128 x 128 tokens takes seconds there.

Full (`:full`): configs/t5.py (c4/en, T5's shapes and schedule) at small, base and large.

Test (`:test`): configs/t5.py:test at two widths (32 and 64), 6 steps.
"""

from lazy_jax.config_base import parse_arg

ADAFACTOR = {
    "optimizer.name": "adafactor",
    "optimizer.schedule": "t5_rsqrt",
    "optimizer.learning_rate": 0.01,
    "optimizer.warmup_steps": 10_000,
    "optimizer.weight_decay": 0.0,
}


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    if a.test:
        return "configs/t5.py:test", {f"d{d}": {"model.d_model": d} for d in (32, 64)}
    if a.full:
        return "configs/t5.py", {size: _shape(size) for size in ("small", "base", "large")}
    common = {
        **ADAFACTOR,
        "model.dtype": "bfloat16",
        "batch_size": 128,
        "total_steps": 1_000_000,
        "log_every_steps": 100,
        "eval_every_steps": 500,
        "checkpoint_every_steps": 1000,
    }
    return "configs/t5.py:local", {size: {**common, **_shape(size)} for size in ("small", "base")}


def _shape(size: str) -> dict:
    shapes = {"small": (512, 6, 2048, 8), "base": (768, 12, 3072, 12), "large": (1024, 24, 4096, 16)}
    d_model, layers, d_ff, heads = shapes[size]
    return {
        "model.d_model": d_model,
        "model.num_encoder_layers": layers,
        "model.num_decoder_layers": layers,
        "model.d_ff": d_ff,
        "model.num_heads": heads,
        "model.d_kv": 64,
    }
