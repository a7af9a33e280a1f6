"""The trainer: mesh equivalence, golden one step, resume, metrics names, bad input."""

import re

import jax
import numpy as np
import pytest

from lazy_jax.config_base import load_config
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.run import train_and_evaluate
from lazy_jax.train import Experiment
from tests.resume_helpers import assert_preempt_and_resume_matches, read_rows

N_LAYERS = 6  # ViT-Mu


def tiny_config(data_dir, **overrides):
    """configs/vit.py:test (ViT-Mu/4 on digits, 6 steps) reading from `data_dir`."""
    c = load_config("configs/vit.py:test")
    c.data.data_dir = data_dir
    for k, v in overrides.items():
        c[k] = v
    return c


def synthetic_data(n=16, seed=0):
    """A synthetic batch with the data's sizes, as the trainer's data spec."""
    return DataSpec(example_batch=synthetic_batch(n, seed), num_classes=10)


def synthetic_batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
        "label": rng.integers(0, 10, size=(n,)).astype(np.int32),
    }


def one_step(config, devices):
    from lazy_jax import sharding as shd

    batch = synthetic_batch()
    exp = Experiment(config, synthetic_data(), devices=devices)
    state = exp.init_state(config.seed)
    with jax.set_mesh(exp.mesh):
        state, m1 = exp.train_step(state, shd.global_batch(batch, exp.mesh))
        state, m2 = exp.train_step(state, shd.global_batch(synthetic_batch(seed=1), exp.mesh))
    return jax.device_get(m1), jax.device_get(m2)


@pytest.mark.parametrize("mesh", [dict(data=2, fsdp=1, model=4), dict(data=2, fsdp=4, model=1)])
def test_eight_device_mesh_matches_one_device(digits_dir, mesh):
    assert len(jax.devices()) == 8
    c1 = tiny_config(digits_dir)
    c1.mesh.update(data=1, fsdp=1, model=1)
    c8 = tiny_config(digits_dir)
    c8.mesh.update(**mesh)
    single = one_step(c1, jax.devices()[:1])
    exp = Experiment(c8, synthetic_data(), devices=jax.devices())
    wi = exp.state_sharding.params["encoderblock_0"]["mlp"]["wi"]["kernel"]
    assert wi.shard_shape((128, 512)) == (128 // mesh["fsdp"], 512 // mesh["model"])  # really sharded
    sharded = one_step(c8, jax.devices())
    for a, b in zip(single, sharded):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=k)


def test_topk_kernel_on_an_eight_device_mesh_matches_the_bisection_on_one(digits_dir, monkeypatch):
    """topk_impl='pallas' (interpret mode here) on a data x fsdp mesh: each device's kernel sees its
    own 2 of the 16 rows, and the step's metrics are the one-device bisection's."""
    from lazy_jax import topk

    seen = []
    kernel = topk._kth_one_read
    monkeypatch.setattr(topk, "_kth_one_read", lambda a, **kw: seen.append(a.shape[0]) or kernel(a, **kw))
    c1 = tiny_config(digits_dir)
    c1.mesh.update(data=1, fsdp=1, model=1)
    c1.model.topk, c1.model.topk_impl, c1.model.depth = 8, "bisect", 2
    c8 = tiny_config(digits_dir)
    c8.mesh.update(data=2, fsdp=4, model=1)
    c8.model.topk, c8.model.topk_impl, c8.model.depth = 8, "pallas", 2
    single = one_step(c1, jax.devices()[:1])
    sharded = one_step(c8, jax.devices())
    assert 2 in seen and 16 not in seen  # never the whole batch (1: the abstract init, off the mesh)
    for a, b in zip(single, sharded):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=k)
    assert single[0]["nonzero_frac/mean"] <= 8 / 512 + 1e-6  # Top-k was applied


def test_golden_one_step(digits_dir):
    """Loss and statistics of one step of a fixed tiny ViT on a fixed batch (values recorded once)."""
    c = tiny_config(digits_dir)
    c.model.num_classes = 10
    c.mesh.update(data=1, fsdp=1, model=1)
    c.optimizer.schedule = "constant"  # so the first update moves the (zero-initialised) head
    _, m = one_step(c, jax.devices()[:1])
    for k, v in GOLDEN.items():
        np.testing.assert_allclose(m[k], v, rtol=1e-4, err_msg=k)


# Metrics of the second step, recorded from this code; a change here means the model, the
# optimizer or the statistics changed.
GOLDEN = {
    "loss": 2.311219,
    "accuracy": 0.0625,
    "grad_norm": 2.53185,
    "nonzero_frac/encoder/layer_00": 0.5015869,
    "nonzero_frac/encoder/layer_05": 0.4912598,
    "nonzero_frac/mean": 0.4980754,
}


def test_preempt_and_resume_matches_uninterrupted_run(digits_dir, tmp_path, monkeypatch):
    assert_preempt_and_resume_matches(lambda: tiny_config(digits_dir), tmp_path, monkeypatch)


def test_metrics_jsonl_names(digits_dir, tmp_path):
    c = tiny_config(digits_dir, total_steps=3)
    c.model.neuron_freq = True
    c.model.count_hist_bins = 8
    train_and_evaluate(c, tmp_path)
    rows = read_rows(tmp_path)
    assert {r["split"] for r in rows} == {"train", "eval"}
    for r in rows:
        layers = sorted(k for k in r if re.fullmatch(r"nonzero_frac/encoder/layer_\d\d", k))
        assert layers == [f"nonzero_frac/encoder/layer_{i:02d}" for i in range(N_LAYERS)]
        assert {"step", "split", "loss", "accuracy", "nonzero_frac/encoder/mean", "nonzero_frac/mean"} <= set(r)
        assert 0 < r["nonzero_frac/mean"] < 1
        np.testing.assert_allclose(r["nonzero_frac/mean"], np.mean([r[k] for k in layers]), rtol=1e-5)
        assert not any(k.startswith(("neuron_freq", "count_hist")) for k in r)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert {"learning_rate", "steps_per_sec", "grad_norm"} <= set(train_rows[0])
    stats = np.load(tmp_path / "stats" / "eval_00000003.npz")
    assert stats["neuron_freq/encoder/layer_00"].shape == (512,)
    np.testing.assert_allclose(stats["count_hist/encoder/layer_00"].sum(), 1.0, rtol=1e-5)
    assert (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir())
