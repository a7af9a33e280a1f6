"""T5 span-corruption training end to end: packing, loss weights, mesh equivalence, resume, metric names."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import input_pipeline
from lazy_jax.config_base import load_config
from lazy_jax.data import span_corruption
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.models import get_model
from lazy_jax.tasks import seq2seq_sums
from lazy_jax.train import Experiment
from tests.resume_helpers import assert_preempt_and_resume_matches

VOCAB = 4224  # the offline tokenizer's 4100 ids, padded
LAYERS = 2


def tiny_config(data_dir, **overrides):
    """configs/t5.py:test (32 wide, 2+2 scanned layers, 6 steps) reading from `data_dir`."""
    c = load_config("configs/t5.py:test")
    c.data.data_dir = str(data_dir)
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module: the resume test compiles the same steps 3 times."""
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    for n, v in before.items():
        jax.config.update(n, v)


def random_examples(rng, n, max_in=7, max_tgt=3):
    return [
        (
            rng.integers(3, 4000, rng.integers(2, max_in + 1)).astype(np.int32),
            rng.integers(3, 4000, rng.integers(2, max_tgt + 1)).astype(np.int32),
        )
        for _ in range(n)
    ]


def packed_batch(seed=0, rows=16, inputs_length=32, targets_length=9):
    """Rows of 1-3 packed random examples, as the text loader makes them with pack=True."""
    rng = np.random.default_rng(seed)
    return span_corruption.pack_rows(
        [random_examples(rng, int(rng.integers(1, 4))) for _ in range(rows)], inputs_length, targets_length
    )


# ------------------------------------------------------------------------------ model and loss


def test_packed_examples_match_examples_alone(pydocs_dir):
    """Segment masking: each example of a packed row gives the logits and statistics it gives alone."""
    c = tiny_config(pydocs_dir)
    c.model.vocab_size = VOCAB
    model = get_model(c.model)
    examples = random_examples(np.random.default_rng(1), 3)
    packed = span_corruption.pack_rows([examples], 32, 9)
    alone = span_corruption.pad_rows(examples, 32, 9)
    apply = jax.jit(lambda v, b: model.apply(v, b))
    variables = jax.jit(model.init)(jax.random.key(0), alone)
    logits_p, aux_p = apply(variables, packed)
    logits_a, aux_a = apply(variables, alone)
    start = 0
    for row, (_, targets) in enumerate(examples):
        n = targets.size
        np.testing.assert_allclose(logits_p[0, start : start + n], logits_a[row, :n], rtol=1e-4, atol=1e-4)
        start += n
    for stack in ("encoder", "decoder"):
        # packed = token-weighted mean of the rows alone (per-row stats from the one-row batches)
        per_row = [
            jax.tree.map(np.asarray, apply(variables, {k: v[r : r + 1] for k, v in alone.items()})[1][stack])
            for r in range(len(examples))
        ]
        tokens = np.stack([p["num_tokens"] for p in per_row])
        expected = (np.stack([p["nonzero_frac"] for p in per_row]) * tokens).sum(0) / tokens.sum(0)
        np.testing.assert_allclose(aux_p[stack]["nonzero_frac"], expected, rtol=1e-5, err_msg=stack)
    # Without segment ids the same row mixes the examples: the masking above is what made them agree.
    unmasked = {k: v for k, v in packed.items() if "segment" not in k}
    assert not np.allclose(apply(variables, unmasked)[0][0, 3:], logits_p[0, 3:], atol=1e-4)
    with pytest.raises(ValueError, match="both 'encoder_segment_ids' and 'decoder_segment_ids'"):
        model.apply(variables, {k: v for k, v in packed.items() if k != "decoder_segment_ids"})


def test_seq2seq_sums_use_loss_weights_and_z_loss():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)
    targets = jnp.asarray([[3, 4, 0], [5, 6, 2]], jnp.int32)
    weights = jnp.asarray([[1, 1, 0], [1, 0, 0]], jnp.float32)  # drops the last real target
    out = seq2seq_sums(logits, {"decoder_target_tokens": targets, "decoder_loss_weights": weights}, z_loss=1e-2)
    ce = -jax.nn.log_softmax(logits)[np.arange(2)[:, None], np.arange(3)[None], targets]
    np.testing.assert_allclose(out["weight"], 3.0)
    np.testing.assert_allclose(out["loss"], ce[0, 0] + ce[0, 1] + ce[1, 0], rtol=1e-6)
    lse = jax.nn.logsumexp(logits, -1)
    np.testing.assert_allclose(out["z_loss"], 1e-2 * (lse[0, 0] ** 2 + lse[0, 1] ** 2 + lse[1, 0] ** 2), rtol=1e-6)
    no_weights = seq2seq_sums(logits, {"decoder_target_tokens": targets})
    np.testing.assert_allclose(no_weights["weight"], 5.0)  # targets > 0
    masked = seq2seq_sums(logits, {"decoder_target_tokens": targets, "mask": jnp.asarray([1.0, 0.0])})
    np.testing.assert_allclose(masked["weight"], 2.0)


@pytest.mark.parametrize("pack", [False, True])
def test_example_batch_has_the_loader_keys_and_vocab_from_tokenizer(pydocs_dir, pack):
    c = tiny_config(pydocs_dir)
    c.data.pack = pack
    spec = input_pipeline.data_spec(c)
    example = spec.example_batch
    assert c.model.vocab_size == -1  # the data's size is an argument of the model, not written back
    assert spec.model_sizes(c.model) == {"vocab_size": VOCAB}
    batch = next(input_pipeline.train_batches(c, 0, 0, 1))
    assert set(example) == set(batch)
    assert all(example[k].shape[1:] == batch[k].shape[1:] and example[k].dtype == batch[k].dtype for k in batch)
    assert batch["encoder_input_tokens"].max() < VOCAB
    c.model.vocab_size = 4100  # every id of the tokenizer fits: allowed, used as given
    assert spec.model_sizes(c.model) == {"vocab_size": 4100}
    c.model.vocab_size = 4000
    with pytest.raises(ValueError, match="model.vocab_size=4000 is not allowed.*>= 4100"):
        spec.model_sizes(c.model)


# ------------------------------------------------------------------------------ trainer


def two_steps(config, devices):
    from lazy_jax import sharding as shd

    data = DataSpec(example_batch=packed_batch(), vocab_size=VOCAB, padded_vocab_size=VOCAB)
    exp = Experiment(config, data, devices=devices)
    state = exp.init_state(config.seed)
    out = []
    with jax.set_mesh(exp.mesh):
        for seed in (0, 1):
            state, m = exp.train_step(state, shd.global_batch(packed_batch(seed), exp.mesh))
            out.append(jax.device_get(m))
    return exp, out


def mesh_config(pydocs_dir, **mesh_sizes):
    c = tiny_config(pydocs_dir)
    c.model.vocab_size = VOCAB
    c.mesh.update(**mesh_sizes)
    return c


@pytest.fixture(scope="module")
def single_device_steps(pydocs_dir):
    return two_steps(mesh_config(pydocs_dir, data=1, fsdp=1, model=1), jax.devices()[:1])[1]


@pytest.mark.parametrize("mesh", [dict(data=2, fsdp=1, model=4), dict(data=2, fsdp=4, model=1)])
def test_eight_device_mesh_matches_one_device(pydocs_dir, single_device_steps, mesh):
    """Packed batches, scanned layers: 2 steps on 8 devices give the 1-device loss and statistics."""
    assert len(jax.devices()) == 8
    single = single_device_steps
    exp, sharded = two_steps(mesh_config(pydocs_dir, **mesh), jax.devices())
    wi = exp.state_sharding.params["encoder"]["layers"]["mlp"]["wi"]["kernel"]
    assert wi.shard_shape((LAYERS, 32, 64)) == (LAYERS, 32 // mesh["fsdp"], 64 // mesh["model"])  # really sharded
    for a, b in zip(single, sharded):
        assert set(a) == set(b)
        assert {f"nonzero_frac/{s}/layer_{i:02d}" for s in ("encoder", "decoder") for i in range(LAYERS)} <= set(a)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=k)
    assert single[1]["loss"] < single[0]["loss"] + 1.0 and np.isfinite(single[1]["loss"])


def test_preempt_and_resume_matches_uninterrupted_run(pydocs_dir, tmp_path, monkeypatch):
    """Real pydocs batches: SIGTERM during step 4 -> checkpoint, rerun continues at 5, same metrics rows."""
    a = assert_preempt_and_resume_matches(lambda: tiny_config(pydocs_dir), tmp_path, monkeypatch)

    # Metric names: per layer of both stacks, on train and eval rows.
    assert {r["split"] for r in a} == {"train", "eval"}
    for r in a:
        for stack in ("encoder", "decoder"):
            layers = sorted(k for k in r if re.fullmatch(rf"nonzero_frac/{stack}/layer_\d\d", k))
            assert layers == [f"nonzero_frac/{stack}/layer_{i:02d}" for i in range(LAYERS)]
            assert 0 < r[f"nonzero_frac/{stack}/mean"] < 1
        assert {"loss", "accuracy", "nonzero_frac/mean"} <= set(r)
        assert 0 <= r["accuracy"] <= 1 and np.isfinite(r["loss"])
    assert a[-1]["split"] == "eval" and a[-1]["step"] == 6
