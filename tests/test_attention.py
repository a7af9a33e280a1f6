"""The attention settings (lazy_jax.models.attention) change speed, never the model; the peers' code runs.

- the odd-length padding of the cuDNN path, run through XLA, gives the unpadded attention and gradients;
- a ViT whose token stream is padded once for cuDNN gives the unpadded logits, statistics and gradients;
- a ViT with q/k/v projected by three einsums gives the fused projection's logits and gradients;
- T5's relative bias by one-hot contraction equals the gather, logits to the bit;
- bad settings are refused by name (cuDNN on a CPU too);
- the T5 peer of `bench --peers` trains a tiny model in the Hugging Face environment (.venv-hf).
"""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax.config_base import load_config
from lazy_jax.errors import InputError
from lazy_jax.models import attention, get_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def restore_settings():
    saved = attention.SETTINGS
    yield
    attention.SETTINGS = saved


def test_odd_length_padding_gives_the_same_attention_and_gradients():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 7, 3, 8)), jnp.float32) for _ in range(3))

    def loss(pad):
        return lambda q, k, v: jnp.sum(jnp.sin(attention.attend(q, k, v, "xla", pad_odd=pad)))

    np.testing.assert_allclose(
        attention.attend(q, k, v, "xla", pad_odd=True), attention.attend(q, k, v, "xla"), rtol=1e-5, atol=1e-6
    )
    for got, want in zip(jax.grad(loss(True), (0, 1, 2))(q, k, v), jax.grad(loss(False), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_vit_with_its_token_stream_padded_gives_the_unpadded_model(monkeypatch):
    config = load_config("configs/vit.py:test")
    config.model.update(dict(variant="Mu/4", depth=2, dropout_rate=0.0))
    config.model.topk = 16  # a pad token must not take part in the statistics or anyone's Top-k
    model = get_model(config.model, num_classes=10, image_shape=(8, 8, 3))  # 4 patches + class token: odd
    batch = {"image": jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)}
    variables = model.init({"params": jax.random.key(0)}, batch)

    def run(padded):
        monkeypatch.setattr(attention, "pads_stream", lambda dtype, length: padded)
        apply = lambda v: model.apply(v, batch)
        return jax.jit(lambda v: (apply(v), jax.grad(lambda w: jnp.sum(jnp.sin(apply(w)[0])))(v)))(variables)

    (logits, stats), grads = run(True)
    (logits0, stats0), grads0 = run(False)
    np.testing.assert_allclose(logits, logits0, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), stats, stats0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads, grads0)


def test_vit_split_qkv_projections_equal_the_fused_one(restore_settings):
    config = load_config("configs/vit.py:test")
    model = get_model(config.model, num_classes=10, image_shape=(8, 8, 3))
    batch = {"image": jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)}
    variables = model.init({"params": jax.random.key(0)}, batch)

    def logits_and_grads(qkv):
        attention.set_attention(qkv=qkv)
        apply = lambda v: model.apply(v, batch)[0]
        return jax.jit(lambda v: (apply(v), jax.grad(lambda w: jnp.sum(jnp.sin(apply(w))))(v)))(variables)

    split, fused = logits_and_grads("split"), logits_and_grads("fused")
    np.testing.assert_allclose(split[0], fused[0], rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), split[1], fused[1])


def test_t5_relative_bias_by_one_hot_equals_the_gather(restore_settings):
    config = load_config("configs/t5.py:test")
    model = get_model(config.model, vocab_size=300)
    rng = np.random.default_rng(0)
    batch = {
        "encoder_input_tokens": jnp.asarray(rng.integers(0, 300, (2, 32)), jnp.int32),
        "decoder_input_tokens": jnp.asarray(rng.integers(0, 300, (2, 9)), jnp.int32),
        "decoder_target_tokens": jnp.asarray(rng.integers(1, 300, (2, 9)), jnp.int32),
    }
    variables = model.init({"params": jax.random.key(0)}, batch)

    def logits_and_grads(relpos):
        attention.set_attention(relpos=relpos)
        apply = lambda v: model.apply(v, batch)[0]
        return apply(variables), jax.grad(lambda v: jnp.sum(jnp.sin(apply(v))))(variables)

    onehot, gather = logits_and_grads("onehot"), logits_and_grads("gather")
    np.testing.assert_array_equal(onehot[0], gather[0])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), onehot[1], gather[1])


@pytest.mark.parametrize(
    "choice, message",
    [
        ({"impl": "flash"}, r"attention impl='flash' is not allowed; allowed: \['auto', 'xla', 'cudnn'\]"),
        ({"relpos": "table"}, r"attention relpos='table' is not allowed"),
        ({"softmax": "f32"}, r"attention setting 'softmax' is unknown"),
        ({"impl": "cudnn"}, r"attention impl='cudnn' needs a CUDA GPU, but the backend is 'cpu'"),
    ],
)
def test_bad_attention_settings_are_refused_by_name(choice, message, restore_settings):
    with pytest.raises(InputError, match=message):
        attention.set_attention(**choice)


HF_PYTHON = os.path.join(ROOT, ".venv-hf", "bin", "python")


@pytest.mark.skipif(not os.path.exists(HF_PYTHON) and not os.environ.get("CI"), reason="no .venv-hf")
def test_t5_peer_trains_a_tiny_model_in_the_hf_environment():
    out = subprocess.run(
        [HF_PYTHON, os.path.join(ROOT, "lazy_jax", "bench_peers.py"), "--model=t5", "--batch=2", "--steps=1",
         "--warmup=1", "--modes=eager", "--device=cpu", "--width=32", "--d_kv=8", "--d_ff=64", "--depth=2",
         "--decoder_depth=2", "--num_heads=4", "--vocab_size=256", "--inputs_length=32", "--targets_length=9"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if '"peer"' in line]
    assert len(rows) == 1 and '"step_ms"' in rows[0], out.stdout
