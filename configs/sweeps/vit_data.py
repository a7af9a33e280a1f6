"""Data: sparsity with real, random-label, random-input and never-repeated ("infinite") training data.

The paper finds the activation maps become sparse with random labels, with random inputs and
with infinite data alike: the sparsity is no artefact of one data set or of memorising it.

Local (default): configs/vit.py:local (ViT-Mu/7 on mnist5k) at the same 250 steps of batch 16
for every member, so they differ in the data alone: `real`, `random_labels` and `random_inputs`
train on the first 1000 training images (each seen 4 times), `infinite` on 4000 draws of the
infinite source (data.infinite=True on mnist5k: every draw a fresh random deformation of a
training digit, lazy_jax/data/infinite.py, so no example is seen twice however long the run). A tenth of the local run's examples each: well under a
minute of training per member on 2 idle CPU cores (estimated, not measured):
  python -m lazy_jax.sweep --sweep=configs/sweeps/vit_data.py --workdir=runs/vit_data
  python -m lazy_jax.report --compare runs/vit_data
compare/nonzero_frac.png shows every member's nonzero share falling from ~50% at initialisation
(the paper's finding), while random labels and random inputs stay at chance accuracy on the real
test images. On one H200 (`launch/results.sh`, eight sweeps side by side, 310 s for all; docs/results.md): eval nonzero
32.2 / 36.2 / 38.4 / 29.8% at step 250 for real / random labels / random inputs / infinite.

Full (`:full`): configs/vit.py (ViT-B/16 on ImageNet-21k) with real, random labels and random
inputs. Infinite data at full size is T5 on C4 (configs/t5.py): its 2^19 steps of 128 rows read
a fraction of C4, so no document is seen twice, as in T5's own pre-training.

Test (`:test`): `real` and `random_labels` on configs/vit.py:test (6 steps on digits).
"""

from lazy_jax.config_base import parse_arg

_DATA = {
    "real": {},
    "random_labels": {"data.random_labels": True},
    "random_inputs": {"data.random_inputs": True},
}


def get_sweep(arg=None):
    a = parse_arg(arg, dict(test=False, full=False))
    if a.test:
        tiny = {"model.width": 32, "model.num_heads": 2, "model.depth": 2, "model.d_ff": 64}
        return "configs/vit.py:test", {name: {**tiny, **_DATA[name]} for name in ("real", "random_labels")}
    if a.full:
        return "configs/vit.py", dict(_DATA)
    # 250 x 16 = 4000 examples each; the infinite source never repeats one.
    same = {
        "batch_size": 16,
        "total_steps": 250,
        "log_every_steps": 10,
        "eval_every_steps": 50,
        "checkpoint_every_steps": 50,
    }
    subset = {"data.train_split": "train[:25%]"}
    members = {name: {**same, **subset, **overrides} for name, overrides in _DATA.items()}
    members["infinite"] = {**same, "data.infinite": True}
    return "configs/vit.py:local", members
