"""Tests of lazy_jax.flops: hand counts of ViT-B/16 and T5-Base, the skippable shares, a run's FLOP table."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from clu import parameter_overview

from lazy_jax import flops
from lazy_jax.config_base import load_config
from lazy_jax.errors import InputError
from lazy_jax.models import get_model, model_spec


def vit_b16():
    return model_spec(load_config("configs/vit.py").model, num_classes=1000)


def t5_base():
    return model_spec(load_config("configs/t5.py").model, vocab_size=32128)


def test_vit_b16_at_224_matches_a_hand_count():
    (part,) = flops.forward_flops(vit_b16(), image_shape=(224, 224, 3))
    # 768 wide, 12 layers, d_ff 3072, 14 x 14 patches of 16 x 16 x 3 plus the class token.
    d, f, layers, t, patches = 768, 3072, 12, 197, 196
    qkv_out = 4 * (2 * d * d)  # four D x D projections per token
    scores_values = 2 * (2 * t * d)  # q.k over 197 keys, probs.v over 197 values, H * K = D
    assert part.tokens == t
    assert part.attention == layers * (qkv_out + scores_values) == 63_885_312
    assert part.mlp_first == part.mlp_second == layers * 2 * d * f == 56_623_104
    patch_projection = patches * 2 * (16 * 16 * 3) * d
    head = 2 * d * 1000
    assert part.rest == pytest.approx((patch_projection + head) / t)
    # 17.56 GMACs per image, as published for ViT-B/16 at 224 (17.6 GMACs).
    assert flops.per_example((part,)) == pytest.approx(35_127_656_448)
    # The README's example: at the paper's 6.3% nonzero in every layer, W_out could skip 30%, both 60%.
    skip = flops.skippable((part,), {m.metric: 0.063 for m in part.mlp_layers})["vit"]
    assert skip.second == pytest.approx(0.937 * part.mlp_second / part.total) and round(skip.second, 2) == 0.30
    assert round(skip.both, 2) == 0.60
    assert [m.metric for m in part.mlp_layers][::11] == [
        "nonzero_frac/encoder/layer_00",
        "nonzero_frac/encoder/layer_11",
    ]


def test_t5_base_at_512_114_matches_a_hand_count():
    enc, dec = flops.forward_flops(t5_base(), inputs_length=512, targets_length=114)
    d, hk, f, s, t, v = 768, 12 * 64, 3072, 512, 114, 32128
    mlp = 2 * d * f
    assert (enc.name, enc.tokens, dec.name, dec.tokens) == ("encoder", 512, "decoder", 114)
    # Encoder layer: q, k, v, out (4 x 2 * 768 * 768), scores and values over 512 positions.
    enc_layer_attention = 4 * 2 * d * hk + 2 * 2 * s * hk
    assert enc.attention == 12 * enc_layer_attention == 75_497_472
    assert enc.mlp_first == enc.mlp_second == 12 * mlp
    assert enc.rest == 0  # the embedding is a lookup
    # Decoder layer: self-attention over 114 positions; cross-attention q and out per decoder
    # token, k and v on the 512 encoder positions (shared by the 114 decoder tokens), scores
    # and values over 512.
    self_attention = 4 * 2 * d * hk + 2 * 2 * t * hk
    cross_attention = 2 * 2 * d * hk + (2 * 2 * d * hk) * s / t + 2 * 2 * s * hk
    assert dec.attention == pytest.approx(12 * (self_attention + cross_attention))
    assert dec.attention == pytest.approx(235_165_157.05, rel=1e-9)
    assert dec.mlp_first == dec.mlp_second == 12 * mlp
    assert dec.rest == 2 * d * v  # tied logits
    assert flops.per_example((enc, dec)) == pytest.approx(512 * enc.total + 114 * dec.total)
    assert flops.per_example((enc, dec)) == pytest.approx(141_981_401_088)


def test_skippable_shares_against_a_direct_sum():
    enc, dec = flops.forward_flops(t5_base(), inputs_length=512, targets_length=114)
    shares = {f"nonzero_frac/encoder/layer_{i:02d}": 0.5 - 0.04 * i for i in range(12)}
    shares |= {f"nonzero_frac/decoder/layer_{i:02d}": 0.02 + 0.01 * i for i in range(12)}
    out = flops.skippable((enc, dec), shares)
    w = 2 * 768 * 3072  # each of W_in and W_out, per token and layer
    enc_zero = sum(1 - (0.5 - 0.04 * i) for i in range(12))  # zero share summed over layers
    dec_zero = sum(1 - (0.02 + 0.01 * i) for i in range(12))
    assert out["encoder"].second == pytest.approx(enc_zero * w / enc.total)
    assert out["encoder"].both == pytest.approx(2 * enc_zero * w / enc.total)
    assert out["decoder"].second == pytest.approx(dec_zero * w / dec.total)
    total = 512 * enc.total + 114 * dec.total
    assert out["all"].second == pytest.approx((512 * enc_zero + 114 * dec_zero) * w / total)
    assert out["all"].both == pytest.approx(2 * out["all"].second)
    assert out["encoder"].nonzero == pytest.approx(0.5 - 0.04 * 5.5)
    # All dense: nothing to skip; all zero: the whole MLP.
    (vit,) = flops.forward_flops(vit_b16(), image_shape=(224, 224, 3))
    dense = flops.skippable((vit,), {m.metric: 1.0 for m in vit.mlp_layers})
    assert dense == {"vit": flops.Skippable(0.0, 0.0, 1.0)}
    empty = flops.skippable((vit,), {m.metric: 0.0 for m in vit.mlp_layers})["vit"]
    assert empty.second == pytest.approx(vit.mlp_second / vit.total)
    assert empty.both == pytest.approx((vit.mlp_first + vit.mlp_second) / vit.total)


def test_mixer_and_two_layer_mlp_counts():
    c = load_config("configs/mixer.py:local")
    spec = model_spec(c.model, num_classes=10)
    (part,) = flops.forward_flops(spec, image_shape=(28, 28, 1))
    d, t, ft, fc = spec.width, (28 // spec.patch) ** 2, spec.tokens_mlp_dim, spec.channels_mlp_dim
    assert (part.tokens, part.attention) == (t, 0)
    # Token MLP per example: D rows of T through T -> Ft -> T; channel MLP: T tokens of D.
    token_in = d * 2 * t * ft
    channel_in = t * 2 * d * fc
    assert part.mlp_first * t == pytest.approx(spec.depth * (token_in + channel_in))
    assert {m.stack for m in part.mlp_layers} == {"token_mlp", "channel_mlp"}
    assert part.rest * t == pytest.approx(t * 2 * spec.patch**2 * d + 2 * d * 10)

    (mlp,) = flops.forward_flops(
        model_spec(load_config("configs/mlp.py:local").model, num_classes=10), image_shape=(28, 28, 1)
    )
    d_ff = load_config("configs/mlp.py:local").model.d_ff
    assert (mlp.tokens, mlp.mlp_first, mlp.mlp_second) == (1, 2 * 784 * d_ff, 2 * d_ff * 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), r"image_shape=None is not allowed for a ViTSpec"),
        (dict(image_shape=(224, 224)), r"image_shape=\(224, 224\) is not allowed"),
        (dict(image_shape=(8, 8, 3)), r"smaller than one 16x16 patch"),
        (dict(image_shape=(224, 224, 3), inputs_length=512), "inputs_length / targets_length are not allowed"),
    ],
)
def test_bad_geometry_is_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        flops.forward_flops(vit_b16(), **kwargs)


def test_bad_t5_lengths_and_shares_are_refused():
    with pytest.raises(InputError, match="targets_length=None is not allowed for a T5Spec"):
        flops.forward_flops(t5_base(), inputs_length=512)
    parts = flops.forward_flops(t5_base(), inputs_length=512, targets_length=114)
    shares = {m.metric: 0.1 for p in parts for m in p.mlp_layers}
    with pytest.raises(InputError, match="no nonzero share for nonzero_frac/decoder/layer_11"):
        flops.skippable(parts, {k: v for k, v in shares.items() if k != "nonzero_frac/decoder/layer_11"})
    with pytest.raises(InputError, match=r"nonzero_frac/encoder/layer_03=1.5 is not allowed"):
        flops.skippable(parts, shares | {"nonzero_frac/encoder/layer_03": 1.5})


def write_vit_workdir(workdir, shares: list[float]):
    """config.json, parameters.txt (as lazy_jax.run writes them) and an eval row of configs/vit.py:test."""
    c = load_config("configs/vit.py:test")
    c.model.num_classes = 10  # resolved, as run.py writes it
    workdir.joinpath("config.json").write_text(c.to_json_best_effort(indent=2))
    model = get_model(c.model)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), {"image": jnp.zeros((1, 16, 16, 1))}))
    overview = parameter_overview.get_parameter_overview(nn.unbox(variables["params"]), include_stats=False)
    workdir.joinpath("parameters.txt").write_text(overview + "\n")
    row = {"step": 6, "split": "eval", "loss": 2.0} | {
        f"nonzero_frac/encoder/layer_{i:02d}": s for i, s in enumerate(shares)
    }
    train = {"step": 6, "split": "train"} | {f"nonzero_frac/encoder/layer_{i:02d}": 0.9 for i in range(6)}
    workdir.joinpath("metrics.jsonl").write_text(json.dumps(train) + "\n" + json.dumps(row) + "\n")


def test_report_rows_of_a_run(tmp_path):
    shares = [0.5, 0.4, 0.3, 0.3, 0.2, 0.1]
    write_vit_workdir(tmp_path, shares)
    header, body = flops.report_rows(tmp_path)
    assert header[7] == "nonzero (eval step 6)"  # the eval row, not the later-written train row
    (row,) = body
    # ViT-Mu/4 on 16 x 16 x 1 images: 16 patches + class token, 128 wide, d_ff 512, 6 layers, 10 classes.
    d, f, t = 128, 512, 17
    attention = 6 * (8 * d * d + 4 * t * d)
    mlp = 6 * 2 * d * f
    rest = (16 * 2 * 4 * 4 * 1 * d + 2 * d * 10) / t
    total = attention + 2 * mlp + rest
    assert row[:2] == ["vit", "17"]
    assert row[2] == f"{flops.format_flops(attention)} ({100 * attention / total:.1f}%)"
    assert row[6] == flops.format_flops(total)
    zero = sum(1 - s for s in shares)
    assert row[7:] == [
        f"{100 * sum(shares) / 6:.1f}%",
        f"{100 * zero * 2 * d * f / total:.1f}%",
        f"{100 * zero * 4 * d * f / total:.1f}%",
    ]
    assert [flops.format_flops(v) for v in (35_127_656_448, 34_995.2, 175_000, 950, 2.5, 0.0)] == [
        "35.1 G",
        "35.0 k",
        "175 k",
        "950",
        "2.50",
        "0",
    ]


def test_read_parameters_and_image_shape(tmp_path):
    write_vit_workdir(tmp_path, [0.5] * 6)
    table = flops.read_parameters(tmp_path)
    assert table.total == 1_195_658  # the clu overview's total of ViT-Mu/4 with 10 classes
    assert table.shapes["pos_embedding"] == (1, 17, 128)
    spec = model_spec(load_config("configs/vit.py:test").model, num_classes=10)
    assert flops.image_shape_from_parameters(spec, table.shapes) == (16, 16, 1)
    # 12 patches do not form a square: a 1 x 12 strip of patches gives the same FLOPs.
    shapes = table.shapes | {"pos_embedding": (1, 13, 128)}
    assert flops.image_shape_from_parameters(spec, shapes) == (4, 48, 1)
    assert flops.read_parameters(tmp_path / "missing") is None


def test_report_rows_without_what_it_needs(tmp_path, caplog):
    assert flops.report_rows(tmp_path, rows=[]) is None
    assert "no config.json" in caplog.text
    write_vit_workdir(tmp_path, [0.5] * 6)
    rows = [{"step": 6, "split": "eval", "nonzero_frac/encoder/layer_00": 0.5}]
    assert flops.report_rows(tmp_path, rows=rows) is None  # five layers have no share
    assert "no metrics row holds the nonzero share of every MLP layer" in caplog.text
