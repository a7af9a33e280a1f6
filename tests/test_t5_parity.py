"""Parity with Hugging Face's PyTorch T5 v1.0, and the checks of the HF checkpoint conversion.

The reference (torch + transformers, test-only) runs in its own Python 3.11 environment made by
tests/hf_reference.py (`.venv-hf`, created on first use); it writes small random
T5ForConditionalGeneration models (state dict, inputs with padding, sequences longer than the
maximum relative distance) and their outputs, which our converted model must match in f32.
"""

import importlib.util
import json
import os
import sys
import types

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


def make_reference(out):
    """The reference outputs in `out`; with no Python 3.11 to build its environment from, the
    parity tests skip, except on CI (`hf_reference.reference_required()`), where they fail."""
    try:
        hf_reference.run_reference(out)
    except hf_reference.HfEnvUnavailable as e:
        if hf_reference.reference_required():
            pytest.fail(f"CI is set, so the PyTorch reference is required, but it is unavailable: {e}")
        pytest.skip(f"PyTorch reference unavailable: {e}")
    return out


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    return make_reference(str(tmp_path_factory.mktemp("hf_reference")))


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


def test_torch_bin_without_torch_is_a_clear_error(reference_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, installed or not
    with pytest.raises(ImportError, match="needs torch"):
        load_hf_t5(os.path.join(reference_dir, "short_distance_bin"))


@pytest.mark.parametrize("layout", ["bin", "bin_sharded"])
def test_torch_bin_loads_through_torch(reference_dir, monkeypatch, layout):
    """pytorch_model.bin (one file, or shards with an index) read by load_hf_t5's own .bin path.

    This process has no torch, so `torch` is a stand-in whose `load` runs the real torch.load, with
    the arguments lazy_jax passes, in the reference environment (`hf_reference.torch_load`)."""
    calls = []

    def load(path, **kwargs):
        calls.append((os.path.basename(path), kwargs))
        return hf_reference.torch_load(path, **kwargs)

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load))
    z, state, hf_config = load_case(reference_dir, "short_distance")
    config, from_bin = load_hf_t5(os.path.join(reference_dir, f"short_distance_{layout}"))
    files = ["pytorch_model.bin"] if layout == "bin" else [f"pytorch_model-0000{i}-of-00002.bin" for i in (1, 2)]
    assert calls == [(f, {"map_location": "cpu", "weights_only": True}) for f in files]  # no arbitrary unpickling
    jax.tree.map(np.testing.assert_array_equal, from_bin, load_hf_t5(state, hf_config)[1])
    logits, _ = jax.jit(lambda p, b: get_model(config).apply({"params": p}, b))(from_bin, batch_of(z))
    assert np.abs(np.asarray(logits) - z["logits"]).max() < TOLERANCE


def test_missing_reference_fails_on_ci_and_skips_elsewhere(monkeypatch, tmp_path, capsys):
    """No Python 3.11 for .venv-hf: `--setup` (launch/local.sh test) and the parity fixture fail when
    CI is set, and only then; elsewhere they warn and skip."""

    def no_base_python():
        raise hf_reference.HfEnvUnavailable("no python3.11 found (test)")

    monkeypatch.setattr(hf_reference, "find_base_python", no_base_python)
    monkeypatch.setattr(hf_reference, "VENV", str(tmp_path / "no-venv-hf"))
    monkeypatch.delenv("LAZY_JAX_HF_PYTHON", raising=False)
    monkeypatch.setattr(sys, "argv", ["hf_reference.py", "--setup"])
    for ci in ("true", "1"):
        monkeypatch.setenv("CI", ci)
        with pytest.raises(SystemExit) as e:
            hf_reference.main()
        assert e.value.code == 1
        assert "error: CI is set" in capsys.readouterr().err
        with pytest.raises(pytest.fail.Exception, match="CI is set"):
            make_reference(str(tmp_path / "out"))
    for ci in (None, "", "false"):
        if ci is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", ci)
        hf_reference.main()  # returns: exit 0
        assert "warning: the T5 parity tests will be skipped" in capsys.readouterr().err
        with pytest.raises(pytest.skip.Exception, match="unavailable"):
            make_reference(str(tmp_path / "out"))


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
