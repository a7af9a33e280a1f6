"""Every config file's default and argument variants load, validate and build the model their docstrings describe.

The expected sizes are written here from the papers (ViT: Dosovitskiy et al. 2021 and Steiner
et al. 2022 for Ti/S; Mixer: Tolstikhin et al. 2021; T5: Raffel et al. 2020, Sec. 3.7) and from
each config's docstring; the parameter counts are those of the released models (timm's
vit_base_patch16_224, Hugging Face's t5-small ... t5-11b), counted from the abstract shapes.
"""

import math
import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from lazy_jax import input_pipeline
from lazy_jax.config_base import load_config
from lazy_jax.config_checks import validate_config
from lazy_jax.errors import InputError
from lazy_jax.models import get_model, model_spec

T5_VOCAB = 32128  # T5's 32100 ids padded to a multiple of 128
I21K, I1K = 21843, 1000

# width, heads, depth, d_ff
VIT = {
    "Ti": (192, 3, 12, 768),
    "S": (384, 6, 12, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 16, 24, 4096),
    "H": (1280, 16, 32, 5120),
    "Mu": (128, 4, 6, 512),  # configs/vit.py:local's docstring
}
# width, depth, tokens_mlp_dim, channels_mlp_dim
MIXER = {"S": (512, 8, 256, 2048), "B": (768, 12, 384, 3072), "L": (1024, 24, 512, 4096)}
# d_model, heads, encoder layers, decoder layers, d_ff, d_kv
T5 = {
    "small": (512, 8, 6, 6, 2048, 64),
    "base": (768, 12, 12, 12, 3072, 64),
    "large": (1024, 16, 24, 24, 4096, 64),
    "3B": (1024, 32, 24, 24, 16384, 128),
    "11B": (1024, 128, 24, 24, 65536, 128),
}
T5_PARAMS = {"small": 60_506_624, "base": 222_903_552, "large": 737_668_096, "3B": 2_851_598_336, "11B": 11_307_321_344}


def vit(variant, patch):
    w, h, d, f = VIT[variant]
    return {"spec.width": w, "spec.num_heads": h, "spec.depth": d, "spec.d_ff": f, "spec.patch": patch}


def mixer(variant, patch):
    w, d, t, c = MIXER[variant]
    return {"spec.width": w, "spec.depth": d, "spec.tokens_mlp_dim": t, "spec.channels_mlp_dim": c, "spec.patch": patch}


def t5(size):
    d, h, le, ld, f, k = T5[size]
    return {
        "spec.d_model": d,
        "spec.num_heads": h,
        "spec.num_encoder_layers": le,
        "spec.num_decoder_layers": ld,
        "spec.d_ff": f,
        "spec.d_kv": k,
        "spec.vocab_size": T5_VOCAB,
    }


FULL_VISION = {  # the paper's i21k recipe (configs/vit.py, configs/mixer.py)
    "data.image_size": 224,
    "batch_size": 4096,
    "total_steps": 300_000,
    "optimizer.name": "adamw",
    "optimizer.learning_rate": 1e-3,
    "optimizer.weight_decay": 0.03,
    "optimizer.warmup_steps": 10_000,
    "optimizer.schedule": "warmup_cosine",
    "model.dtype": "bfloat16",
    "model.scan_layers": False,
}
T5_FULL = {
    "data.name": "c4/en",
    "data.inputs_length": 512,
    "data.targets_length": 114,
    "data.eval_split": "validation[:16384]",
    "batch_size": 128,
    "total_steps": 524_288,
    "eval_every_steps": 10_000,
    "optimizer.name": "adafactor",
    "optimizer.learning_rate": 0.01,
    "optimizer.schedule": "t5_rsqrt",
    "optimizer.warmup_steps": 10_000,
    "model.dropout_rate": 0.1,
    "model.dtype": "bfloat16",
    "model.scan_layers": False,
    "model.vocab_size": -1,
    "spec.mlp.topk": 0,
}
LOCAL_VISION = {"data.name": "mnist5k", "model.dtype": "float32"}

# (config spec, classes of its data, what must hold)


def case(spec_string, num_classes, expected, xfail=None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(spec_string, num_classes, expected, id=spec_string, marks=marks)


CASES = [
    c if hasattr(c, "marks") else case(*c)  # plain tuples, and the pytest.params of case()
    for c in [
        (
            "configs/vit.py",
            I21K,
            {
                **vit("B", 16),
                **FULL_VISION,
                "data.name": "imagenet21k",
                "data.eval_split": "validation",
                "spec.mlp.topk": 0,
            },
        ),
        ("configs/vit.py:variant=S/16,topk=64", I21K, {**vit("S", 16), **FULL_VISION, "spec.mlp.topk": 64}),
        ("configs/vit.py:variant=Ti/16", I21K, vit("Ti", 16)),
        ("configs/vit.py:variant=L/16", I21K, vit("L", 16)),
        ("configs/vit.py:variant=H/14", I21K, vit("H", 14)),
        ("configs/vit.py:variant=B/32,dataset=imagenet2012", I1K, {**vit("B", 32), "data.eval_split": "validation"}),
        ("configs/vit.py:dataset=cifar10", 10, {**vit("B", 16), "data.name": "cifar10", "data.eval_split": "test"}),
        (
            "configs/vit.py:local",
            10,
            {
                **vit("Mu", 7),
                **LOCAL_VISION,
                "total_steps": 1200,
                "batch_size": 64,
                "optimizer.name": "adamw",
                "optimizer.learning_rate": 2e-3,
                "optimizer.schedule": "constant",
            },
        ),
        ("configs/vit.py:local,variant=Mu/4,dataset=digits,topk=16", 10, {**vit("Mu", 4), "spec.mlp.topk": 16}),
        (
            "configs/vit.py:test",
            10,
            {
                **vit("Mu", 4),
                "data.name": "digits",
                "batch_size": 16,
                "total_steps": 6,
                "eval_every_steps": 3,
                "checkpoint_every_steps": 3,
                "async_checkpointing": False,
            },
        ),
        ("configs/mixer.py", I21K, {**mixer("B", 16), **FULL_VISION, "data.name": "imagenet21k", "spec.mlp.topk": 0}),
        ("configs/mixer.py:variant=S/32,topk=32", I21K, {**mixer("S", 32), "spec.mlp.topk": 32}),
        ("configs/mixer.py:variant=L/16", I21K, mixer("L", 16)),
        ("configs/mixer.py:dataset=imagenet2012", I1K, {**mixer("B", 16), "data.eval_split": "validation"}),
        case(
            "configs/mixer.py:dataset=cifar10",
            10,
            {"data.name": "cifar10", "data.eval_split": "test"},  # as configs/vit.py:dataset=cifar10
        ),
        (
            "configs/mixer.py:local",
            10,
            {
                "spec.width": 128,
                "spec.depth": 6,
                "spec.tokens_mlp_dim": 64,
                "spec.patch": 7,
                **LOCAL_VISION,
                "total_steps": 500,
                "batch_size": 64,
            },
        ),
        (
            "configs/mlp.py",
            10,
            {
                "spec.d_ff": 2048,
                "data.name": "cifar10",
                "batch_size": 128,
                "total_steps": 50_000,
                "optimizer.learning_rate": 1e-3,
                "optimizer.name": "adamw",
            },
        ),
        ("configs/mlp.py:d_ff=1024,topk=32", 10, {"spec.d_ff": 1024, "spec.mlp.topk": 32}),
        (
            "configs/mlp.py:local",
            10,
            {"spec.d_ff": 512, **LOCAL_VISION, "total_steps": 2000, "batch_size": 128, "optimizer.learning_rate": 3e-3},
        ),
        ("configs/mlp.py:local,dataset=digits,d_ff=64", 10, {"spec.d_ff": 64, "data.name": "digits"}),
        ("configs/t5.py", None, {**t5("base"), **T5_FULL}),
        *[
            case(
                f"configs/t5.py:size={size}",
                None,
                {**t5(size), **T5_FULL},
            )
            for size in ("small", "large", "3B", "11B")
        ],
        ("configs/t5.py:size=small,topk=64", None, {**t5("small"), "spec.mlp.topk": 64}),
        ("configs/t5.py:size=tiny", None, {"spec.vocab_size": T5_VOCAB}),
        (
            "configs/t5.py:local",
            None,
            {
                "spec.d_model": 128,
                "spec.num_heads": 4,
                "spec.num_encoder_layers": 2,
                "spec.num_decoder_layers": 2,
                "spec.d_ff": 512,
                "data.name": "pydocs",
                "data.inputs_length": 128,
                "data.targets_length": 29,
                "batch_size": 32,
                "total_steps": 500,
                "optimizer.name": "adamw",
                "optimizer.learning_rate": 1e-2,
                "optimizer.schedule": "warmup_cosine",
                "model.dropout_rate": 0.0,
                "data.pack": False,
            },
        ),
        (
            "configs/t5.py:test",
            None,
            {
                "spec.d_model": 32,
                "spec.num_encoder_layers": 2,
                "spec.num_decoder_layers": 2,
                "model.scan_layers": True,
                "data.inputs_length": 32,
                "data.targets_length": 9,
                "batch_size": 16,
                "total_steps": 6,
                "async_checkpointing": False,
            },
        ),
    ]
]


def lookup(config, spec, dotted):
    """'spec.mlp.topk' -> the built spec's attribute; 'optimizer.name' -> the config's value."""
    obj, *path = dotted.split(".")
    if obj == "spec":
        value = spec
        for p in path:
            value = getattr(value, p)
        return value
    value = config
    for p in dotted.split("."):
        value = value[p]
    return value


def load(spec_string):
    config = load_config(spec_string)
    validate_config(config)
    return config


@pytest.mark.parametrize("spec_string,num_classes,expected", CASES)
def test_config_validates_and_builds_what_its_docstring_says(spec_string, num_classes, expected):
    config = load(spec_string)
    spec = model_spec(config.model, num_classes=num_classes, vocab_size=T5_VOCAB)
    got = {k: lookup(config, spec, k) for k in expected}
    assert got == expected
    if num_classes is not None:
        assert spec.num_classes == num_classes
    with pytest.raises(AttributeError):  # configs are locked: a misspelt key is refused
        config.no_such_key = 1


def allowed_arguments(path):
    """The arguments a config file takes, from its refusal of an unknown one."""
    with pytest.raises(InputError, match="is unknown; allowed: ") as e:
        load_config(f"{path}:no_such_argument")
    return set(re.findall(r"'(\w+)'", str(e.value).split("allowed: ")[1]))


@pytest.mark.parametrize("path", ["configs/vit.py", "configs/mixer.py", "configs/mlp.py", "configs/t5.py"])
def test_every_argument_of_every_config_is_covered(path):
    """A new config argument needs a case above."""
    used = set()
    for c in CASES:
        file, _, arg = c.values[0].partition(":")
        if file == path:
            used |= {part.partition("=")[0] for part in arg.split(",") if part}
    assert allowed_arguments(path) == used


def parameter_count(config, batch, **sizes):
    model = get_model(config.model, **sizes)
    abstract = jax.eval_shape(lambda r: model.init(r, batch, train=False), jax.random.key(0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(abstract)["params"]))


T5_BATCH = {
    k: np.zeros((1, 8), np.int32) for k in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
}


@pytest.mark.parametrize(
    "size",
    [
        "small",
        "base",
        "large",
        "3B",
        "11B",
    ],
)
def test_t5_sizes_have_the_released_models_parameter_counts(size):
    config = load(f"configs/t5.py:size={size}")
    assert parameter_count(config, T5_BATCH, vocab_size=T5_VOCAB) == T5_PARAMS[size]


def test_vit_b16_has_the_released_models_parameter_count():
    config = load("configs/vit.py:dataset=imagenet2012")
    image = {"image": np.zeros((1, 224, 224, 3), np.float32)}
    assert parameter_count(config, image, num_classes=I1K) == 86_567_656  # timm's vit_base_patch16_224


# ----------------------------------------------------------------------------- with the local data
def test_local_vision_configs_on_mnist5k(mnist5k_dir):
    """ViT-Mu/7: 17 tokens (16 patches of 7x7 and the class token), 1.2M parameters (README); Mixer-Mu/7: 16 patches."""
    for path in ("configs/vit.py:local", "configs/mixer.py:local", "configs/mlp.py:local"):
        config = load(path)
        config.data.data_dir = mnist5k_dir
        data = input_pipeline.data_spec(config)
        assert data.example_batch["image"].shape[1:] == (28, 28, 1) and data.num_classes == 10, path
        spec = model_spec(config.model, **data.model_sizes(config.model))
        if path.startswith("configs/vit.py"):
            assert (28 // spec.patch) ** 2 + 1 == 17
            count = parameter_count(config, data.example_batch, **data.model_sizes(config.model))
            assert round(count / 1e6, 1) == 1.2, count
        elif path.startswith("configs/mixer.py"):
            assert (28 // spec.patch) ** 2 == 16


def test_vit_test_config_on_digits(digits_dir):
    """The tiny test run: 8x8 digits (lazy_jax/data/offline.py), so 4 patches of 4x4 and the class token."""
    config = load("configs/vit.py:test")
    config.data.data_dir = digits_dir
    data = input_pipeline.data_spec(config)
    assert data.example_batch["image"].shape[1:] == (8, 8, 1)
    assert model_spec(config.model, **data.model_sizes(config.model)).patch == 4


def test_local_t5_config_on_pydocs(pydocs_dir):
    """4000 SentencePiece pieces + 100 sentinels = 4100 ids, padded to 4224 (configs/t5.py's docstring)."""
    config = load("configs/t5.py:local")
    config.data.data_dir = pydocs_dir
    data = input_pipeline.data_spec(config)
    assert (data.vocab_size, data.padded_vocab_size) == (4100, 4224)
    assert model_spec(config.model, **data.model_sizes(config.model)).vocab_size == 4224
    assert data.example_batch["encoder_input_tokens"].shape[1:] == (128,)
    assert data.example_batch["decoder_target_tokens"].shape[1:] == (29,)
