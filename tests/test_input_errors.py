"""Bad inputs from a user trial that misbehaved (trained on nonsense, crashed deep inside a library,
or waited silently): each is refused with one clear line naming the value and what is allowed."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lazy_jax.config_base import load_config
from lazy_jax.errors import InputError
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.models import mixer as mixer_lib
from lazy_jax.models import mlp as mlp_lib
from lazy_jax.models import model_spec
from lazy_jax.models import vit as vit_lib
from lazy_jax.run import train_and_evaluate
from tests.test_train import tiny_config

REPO = Path(__file__).resolve().parents[1]


def run_module(module, *args, timeout=180, env=None):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )


def assert_one_line_error(out, *fragments):
    """Exit 2, no traceback, and the last stderr line `error: ...` holding every fragment."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


# -- 1: a patch that does not tile the image ------------------------------------------------------


def _vision_model(kind, variant):
    lib = vit_lib if kind == "vit" else mixer_lib
    return lib.default_model_config(variant)


@pytest.mark.parametrize("kind", ["vit", "mixer"])
@pytest.mark.parametrize(
    "variant, image_shape, problem",
    [
        ("Mu/16", (8, 8, 1), "larger than the image"),
        ("Mu/32", (28, 28, 1), "larger than the image"),
        ("Mu/16", (8, 32, 3), "larger than the image"),  # the shorter side counts
        ("Mu/3", (8, 8, 1), "not a divisor"),  # 2x2 patches, 2 rows and columns dropped
        ("Mu/7", (32, 32, 3), "not a divisor"),
    ],
)
def test_patch_that_does_not_tile_the_image_is_refused(kind, variant, image_shape, problem):
    with pytest.raises(InputError) as err:
        model_spec(_vision_model(kind, variant), num_classes=10, image_shape=image_shape)
    msg = str(err.value)
    assert f"model.variant={variant!r} has patch {variant.split('/')[1]}, {problem}" in msg
    assert f"images are {image_shape[0]}x{image_shape[1]}" in msg and "data.image_size" in msg


@pytest.mark.parametrize("kind", ["vit", "mixer"])
@pytest.mark.parametrize("variant, image_shape", [("Mu/8", (8, 8, 1)), ("Mu/4", (8, 8, 1)), ("B/16", (224, 224, 3))])
def test_patch_that_tiles_the_image_is_allowed(kind, variant, image_shape):
    spec = model_spec(_vision_model(kind, variant), num_classes=10, image_shape=image_shape)
    assert spec == model_spec(_vision_model(kind, variant), num_classes=10)  # the shape is checked, not kept


def test_data_spec_gives_the_image_shape_and_other_models_ignore_it():
    spec = DataSpec(example_batch={"image": np.zeros((1, 8, 8, 1), np.float32)}, num_classes=10)
    sizes = spec.model_sizes(vit_lib.default_model_config("Mu/4"))
    assert sizes == {"num_classes": 10, "image_shape": (8, 8, 1)}
    assert model_spec(mlp_lib.default_model_config(), **sizes).num_classes == 10  # the MLP takes no image shape
    with pytest.raises(InputError, match="patch 16, larger than the image"):
        model_spec(vit_lib.default_model_config("Mu/16"), **sizes)


def test_run_with_patch_larger_than_the_images_is_refused_before_the_workdir(digits_dir, tmp_path):
    c = tiny_config(digits_dir)
    c.model.variant = "Mu/16"  # digits are 8x8
    with pytest.raises(InputError, match=r"model.variant='Mu/16' has patch 16, larger than the image.* 8x8"):
        train_and_evaluate(c, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# -- 3: an invalid MLP width is named, not reported as a Top-k error ------------------------------


@pytest.mark.parametrize("d_ff", [0, -4])
@pytest.mark.parametrize(
    "spec, key",
    [
        ("configs/vit.py:test", "d_ff"),
        ("configs/mixer.py:local", "tokens_mlp_dim"),
        ("configs/mixer.py:local", "channels_mlp_dim"),
        ("configs/mlp.py:local", "d_ff"),
        ("configs/t5.py:test", "d_ff"),
    ],
)
def test_invalid_mlp_width_names_the_width_not_topk(spec, key, d_ff):
    c = load_config(spec)
    c.model[key] = d_ff
    c.model.topk = 8
    with pytest.raises(InputError, match=rf"^model.{key}={d_ff} is not allowed: use a positive integer"):
        model_spec(c.model, num_classes=10, vocab_size=4224)
