"""Parity with Hugging Face's PyTorch T5 v1.0, and the checks of the HF checkpoint conversion.

The reference (torch + transformers, test-only) runs in its own Python 3.11 environment made by
tests/hf_reference.py (`.venv-hf`, created on first use); it writes small random
T5ForConditionalGeneration models (state dict, inputs with padding, sequences longer than the
maximum relative distance) and their outputs, which our converted model must match in f32.
"""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from lazy_jax.models import get_model
from lazy_jax.models.t5 import T5, relative_position_bucket
from lazy_jax.models.t5_convert import (
    _LAYOUTS,
    _hf_name_map,
    _param_shapes,
    load_hf_t5,
    model_config_from_hf,
    read_safetensors,
)

_spec = importlib.util.spec_from_file_location(
    "hf_reference", os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_reference.py")
)
hf_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hf_reference)

TOLERANCE = 1e-4  # max abs difference of f32 encoder states and logits


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hf_reference"))
    try:
        hf_reference.run_reference(out)
    except hf_reference.HfEnvUnavailable as e:
        pytest.skip(f"PyTorch reference unavailable: {e}")
    return out


def load_case(reference_dir, case):
    z = np.load(os.path.join(reference_dir, f"{case}.npz"))
    state = {k[len("state/") :]: z[k] for k in z.files if k.startswith("state/")}
    return z, state, json.loads(str(z["config_json"]))


def batch_of(z):
    return {k: z[k] for k in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")}


@pytest.mark.parametrize("case", list(hf_reference.CASES))
def test_logits_match_pytorch(reference_dir, case):
    z, state, hf_config = load_case(reference_dir, case)
    batch = batch_of(z)
    enc = batch["encoder_input_tokens"]
    assert (enc == 0).any() and (batch["decoder_target_tokens"] == 0).any()  # padding is exercised
    config, params = load_hf_t5(state, hf_config)
    assert config.relative_attention_max_distance < enc.shape[1]  # so are far buckets
    model = get_model(config)
    encoded, _ = jax.jit(lambda p, t: model.apply({"params": p}, t, method=T5.encode))(params, enc)
    enc_diff = np.abs(np.asarray(encoded) - z["encoder_hidden"])
    assert enc_diff.max() < TOLERANCE, f"encoder states differ by {enc_diff.max()}"
    logits, aux = jax.jit(lambda p, b: model.apply({"params": p}, b))(params, batch)
    diff = np.abs(np.asarray(logits) - z["logits"])
    assert diff.max() < TOLERANCE, (
        f"logits differ by {diff.max()} (valid: {diff[batch['decoder_target_tokens'] > 0].max()})"
    )
    assert aux["encoder"]["nonzero_frac"].shape == (hf_config["num_layers"],)
    assert aux["decoder"]["nonzero_frac"].shape == (hf_config["num_decoder_layers"],)
    assert aux["decoder"]["num_tokens"][0] == (batch["decoder_target_tokens"] > 0).sum()


@pytest.mark.parametrize("case", list(hf_reference.CASES))
def test_relative_position_buckets_match_pytorch(reference_dir, case):
    z, _, hf_config = load_case(reference_dir, case)
    for kind in ("bidirectional", "causal"):
        ours = relative_position_bucket(
            z["relative_positions"],
            bidirectional=kind == "bidirectional",
            num_buckets=hf_config["relative_attention_num_buckets"],
            max_distance=hf_config["relative_attention_max_distance"],
        )
        np.testing.assert_array_equal(ours, z[f"buckets_{kind}"])


def test_directory_and_scan_loading(reference_dir):
    z, state, hf_config = load_case(reference_dir, "short_distance")
    _, from_state = load_hf_t5(state, hf_config)
    config, from_dir = load_hf_t5(os.path.join(reference_dir, "short_distance_safetensors"))
    jax.tree.map(np.testing.assert_array_equal, from_dir, from_state)
    # The same checkpoint loaded for nn.scan (params stacked on a leading layer axis).
    s_config, s_params = load_hf_t5(
        os.path.join(reference_dir, "short_distance_safetensors"), scan_layers=True, remat_policy="full"
    )
    assert s_params["decoder"]["layers"]["mlp"]["wi"]["kernel"].shape[0] == 2
    logits, aux = jax.jit(lambda p, b: get_model(s_config).apply({"params": p}, b))(s_params, batch_of(z))
    assert np.abs(np.asarray(logits) - z["logits"]).max() < TOLERANCE
    assert aux["encoder"]["nonzero_frac"].shape == (3,) and aux["decoder"]["nonzero_frac"].shape == (2,)


def test_torch_bin(reference_dir):
    bin_dir = os.path.join(reference_dir, "short_distance_bin")
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ImportError, match="needs torch"):
            load_hf_t5(bin_dir)
    else:
        _, state, hf_config = load_case(reference_dir, "short_distance")
        jax.tree.map(np.testing.assert_array_equal, load_hf_t5(bin_dir)[1], load_hf_t5(state, hf_config)[1])


# ----------------------------------------------------------------------------- conversion errors
# These need no PyTorch: a fake HF state dict with the right names and shapes.
HF_CONFIG = dict(
    model_type="t5",
    vocab_size=30,
    d_model=16,
    d_kv=4,
    d_ff=32,
    num_heads=2,
    num_layers=2,
    num_decoder_layers=1,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=10,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
)


def fake_state_dict(hf_config=HF_CONFIG, seed=0):
    config = model_config_from_hf(hf_config)
    shapes = _param_shapes(config)
    rng = np.random.default_rng(seed)
    state = {
        hf: rng.normal(size=_LAYOUTS[layout][1](shapes[path])).astype(np.float32)
        for path, (hf, layout) in _hf_name_map(2, 1).items()
    }
    state["lm_head.weight"] = state["shared.weight"].copy()
    return state


def test_conversion_places_every_tensor():
    state = fake_state_dict()
    config, params = load_hf_t5(state, HF_CONFIG)
    assert config.size == "custom" and config.num_decoder_layers == 1 and config.vocab_size == 30
    q = state["encoder.block.1.layer.0.SelfAttention.q.weight"]  # [H*K, D]
    np.testing.assert_array_equal(params["encoder"]["layers_1"]["attention"]["query"], q.T.reshape(16, 2, 4))
    o = state["decoder.block.0.layer.1.EncDecAttention.o.weight"]  # [D, H*K]
    np.testing.assert_array_equal(
        params["decoder"]["layers_0"]["encoder_decoder_attention"]["out"], o.T.reshape(2, 4, 16)
    )
    np.testing.assert_array_equal(
        params["decoder"]["layers_0"]["mlp"]["wo"]["kernel"],
        state["decoder.block.0.layer.2.DenseReluDense.wo.weight"].T,
    )
    # Every value placed is distinct data from the (random) state dict: nothing filled twice.
    leaves = [np.asarray(x).ravel()[0] for x in jax.tree.leaves(params)]
    assert len(set(leaves)) == len(leaves) == len(state) - 1


def test_safetensors_reader(tmp_path):
    import struct

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = json.dumps(
        {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "__metadata__": {"format": "pt"}}
    ).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + a.tobytes())
    np.testing.assert_array_equal(read_safetensors(str(path))["a"], a)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(feed_forward_proj="gated-gelu"), "feed_forward_proj='gated-gelu'"),
        (dict(tie_word_embeddings=False), "tie_word_embeddings=False"),
        (dict(model_type="umt5"), "model_type='umt5'"),
    ],
)
def test_refuses_other_t5_configs(change, match):
    with pytest.raises(ValueError, match=match):
        load_hf_t5(fake_state_dict(), {**HF_CONFIG, **change})


def test_state_dict_errors(tmp_path):
    state = fake_state_dict()
    bad = dict(state)
    bad["decoder.block.0.layer.1.EncDecAttention.k.weight"] = np.zeros((8, 15), np.float32)
    with pytest.raises(ValueError, match=r"EncDecAttention\.k\.weight' has shape \(8, 15\).*needs \(8, 16\)"):
        load_hf_t5(bad, HF_CONFIG)
    missing = {k: v for k, v in state.items() if k != "encoder.final_layer_norm.weight"}
    with pytest.raises(ValueError, match="lacks 1 tensor.*encoder.final_layer_norm.weight"):
        load_hf_t5(missing, HF_CONFIG)
    with pytest.raises(ValueError, match="does not use.*encoder.block.2.layer.0.layer_norm.weight"):
        load_hf_t5({**state, "encoder.block.2.layer.0.layer_norm.weight": np.ones(16, np.float32)}, HF_CONFIG)
    with pytest.raises(ValueError, match="lm_head.weight.*not tied"):
        load_hf_t5({**state, "lm_head.weight": state["shared.weight"] + 1}, HF_CONFIG)
    with pytest.raises(ValueError, match="needs its HF T5Config"):
        load_hf_t5(state)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_t5(str(tmp_path / "missing"))
