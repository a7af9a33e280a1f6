"""bf16 activations with f32 parameters (`model.dtype='bfloat16'`), for the ViT and T5.

The dtype of every MLP's input, activation map (the input of its `wo` Dense) and output is
recorded while the model is traced (`nn.intercept_methods`), so a model that quietly computes in
f32 fails here even when its logits look plausible.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import sharding as shd
from lazy_jax.config_base import load_config
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.models import get_model
from lazy_jax.sparsity import MlpBlock
from lazy_jax.train import Experiment
from tests.model_helpers import random_variables

VOCAB = 128
BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


def model_config(kind: str, dtype: str):
    c = load_config(f"configs/{kind}.py:test")
    c.model.dtype = dtype
    return c.model


def build(kind: str, dtype: str):
    sizes = dict(num_classes=10) if kind == "vit" else dict(vocab_size=VOCAB)
    return get_model(model_config(kind, dtype), **sizes)


def make_batch(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kind == "vit":  # 16x16x1 images in [-1, 1]: 4x4 patches of 4
        return {"image": rng.uniform(-1, 1, size=(3, 16, 16, 1)).astype(np.float32)}
    enc_BS = rng.integers(2, VOCAB, (3, 12)).astype(np.int32)
    tgt_BT = rng.integers(2, VOCAB, (3, 7)).astype(np.int32)
    enc_BS[1, 8:], tgt_BT[2, 4:] = 0, 0  # padding in both stacks
    dec_BT = np.concatenate([np.zeros_like(tgt_BT[:, :1]), tgt_BT[:, :-1]], axis=1)
    return dict(encoder_input_tokens=enc_BS, decoder_input_tokens=dec_BT, decoder_target_tokens=tgt_BT)


def apply_recording_mlp_dtypes(model, variables, batch):
    """-> (logits, aux, [(MLP input, activation map, MLP output) dtypes per traced MlpBlock])."""
    seen = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        m = context.module
        if context.method_name == "__call__" and isinstance(m, MlpBlock):
            seen.append({"input": args[0].dtype, "output": out[0].dtype})
        elif context.method_name == "__call__" and m.name == "wo" and isinstance(m.parent, MlpBlock):
            seen.append({"activation": args[0].dtype})
        return out

    with nn.intercept_methods(record):  # active while jit traces the model
        logits, aux = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
    # Pair each block's activation entry (recorded inside it) with its own entry (recorded after).
    merged = [{**a, **b} for a, b in zip(seen[0::2], seen[1::2])]
    return logits, aux, merged


@pytest.fixture(scope="module", params=["vit", "t5"])
def runs(request):
    """The same random parameters through the f32 and the bf16 model of one kind."""
    kind = request.param
    batch = make_batch(kind)
    variables = random_variables(build(kind, "float32"), batch)
    out = {dtype: apply_recording_mlp_dtypes(build(kind, dtype), variables, batch) for dtype in ("float32", "bfloat16")}
    return kind, out


def test_mlp_activations_are_bfloat16(runs):
    kind, out = runs
    for dtype, want in (("float32", F32), ("bfloat16", BF16)):
        blocks = out[dtype][2]
        assert blocks, f"{kind}: no MlpBlock was traced"
        assert all(set(b) == {"input", "activation", "output"} for b in blocks), blocks
        got = {jnp.dtype(d) for b in blocks for d in b.values()}
        assert got == {want}, f"{kind} with model.dtype={dtype}: MLP dtypes {got}"


def test_bfloat16_logits_differ_from_float32_but_stay_close(runs):
    kind, out = runs
    (f32_logits, f32_aux, _), (bf16_logits, bf16_aux, _) = out["float32"], out["bfloat16"]
    assert f32_logits.dtype == F32 and bf16_logits.dtype == F32  # logits are computed in f32
    diff = jnp.abs(bf16_logits - f32_logits)
    spread = float(jnp.std(f32_logits))
    assert spread > 0.01, "random parameters must give non-trivial logits"
    # bf16 keeps 8 bits of mantissa: the logits move by far more than f32 round-off, yet on
    # average stay well inside their spread (the random 6-layer ViT drifts most: ~13% of it).
    assert float(jnp.max(diff)) > 1e-3 * spread, (kind, float(jnp.max(diff)), spread)
    assert float(jnp.mean(diff)) < 0.25 * spread, (kind, float(jnp.mean(diff)), spread)
    for stack in f32_aux:
        assert bf16_aux[stack]["nonzero_frac"].dtype == F32
        np.testing.assert_allclose(bf16_aux[stack]["nonzero_frac"], f32_aux[stack]["nonzero_frac"], atol=0.05)


@pytest.mark.parametrize("kind", ["vit", "t5"])
def test_bfloat16_model_has_float32_parameters(kind):
    batch = make_batch(kind)
    abstract = jax.eval_shape(lambda r: build(kind, "bfloat16").init(r, batch, train=False), jax.random.key(0))
    dtypes = {x.dtype for x in jax.tree.leaves(nn.meta.unbox(abstract))}
    assert dtypes == {F32}


def test_bfloat16_train_step_keeps_float32_state_and_changes_the_loss():
    """Through the trainer: config.model.dtype reaches the model; params and optimizer state stay f32."""
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.uniform(-1, 1, size=(16, 16, 16, 1)).astype(np.float32),
        "label": rng.integers(0, 10, size=(16,)).astype(np.int32),
    }
    losses = {}
    for dtype in ("float32", "bfloat16"):
        c = load_config("configs/vit.py:test")
        c.model.update(dtype=dtype, width=32, num_heads=2, depth=2, d_ff=64)
        c.mesh.update(data=1, fsdp=1, model=1)
        c.optimizer.schedule = "constant"
        exp = Experiment(c, DataSpec(example_batch=batch, num_classes=10), devices=jax.devices()[:1])
        state = exp.init_state(c.seed)
        with jax.set_mesh(exp.mesh):
            for _ in range(2):  # the second step's loss sees a non-zero head
                state, metrics = exp.train_step(state, shd.global_batch(batch, exp.mesh))
        assert {x.dtype for x in jax.tree.leaves(state.params)} == {F32}
        assert {x.dtype for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)} == {F32}
        losses[dtype] = float(metrics["loss"])
    assert losses["bfloat16"] != losses["float32"]
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)
