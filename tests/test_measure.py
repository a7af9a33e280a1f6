"""Tests of `python -m lazy_jax.measure`: a tiny trained ViT and a tiny Hugging Face T5, and bad input.

The ViT's numbers are held to an independent path: the trainer's own eval row of the same
checkpoint (Experiment.evaluate over the same split), and the activation maps captured here from
the `wo` Dense of every MLP block and counted in numpy for the one-batch statistics.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

from lazy_jax import measure, run
from lazy_jax import workdir as wd
from lazy_jax.config_base import load_config
from lazy_jax.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, digits_dir) -> Path:
    config = load_config(str(REPO / "configs/vit.py:test"))
    with config.unlocked():
        config.data.data_dir = digits_dir
    workdir = tmp_path_factory.mktemp("vit_run")
    run.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def vit_measured(vit_run, tmp_path_factory):
    before = _snapshot(vit_run)
    out = measure.measure(workdir=str(vit_run), progress=False, out=str(tmp_path_factory.mktemp("m") / "out"))
    assert _snapshot(vit_run) == before, "measure changed the workdir"
    return out, json.loads((out / measure.JSON_NAME).read_text())


def test_nonzero_shares_equal_the_trainers_eval_of_the_same_checkpoint(vit_run, vit_measured):
    _, results = vit_measured
    step = results["meta"]["step"]
    row = [r for r in wd.read_metrics(vit_run) if r["split"] == "eval" and r["step"] == step][-1]
    layers = results["stacks"]["encoder"]["layers"]
    assert len(layers) == 6
    for layer in layers:
        key = f"nonzero_frac/encoder/layer_{layer['layer']:02d}"
        np.testing.assert_allclose(layer["nonzero_frac"], row[key], rtol=1e-5, err_msg=key)
        # The union at n = 1 is the nonzero share; it rises with n, consecutive as random.
        assert layer["union_random"][0] == pytest.approx(layer["nonzero_frac"], rel=1e-6)
        assert layer["union_consecutive"][0] == pytest.approx(layer["nonzero_frac"], rel=1e-6)
        assert np.all(np.diff(layer["union_random"]) >= 0)
        assert sum(layer["freq_hist"]) + layer["dead_frac"] == pytest.approx(1.0)
        assert sum(layer["count_hist"]) == pytest.approx(1.0)
    assert layers[0]["tokens"] == 300 * 5  # the digits' 300 test images x (4 patches + class token)


def test_outputs_are_written(vit_measured):
    out, results = vit_measured
    for name in ("report.md", "nonzero.png", "neuron_freq.png", "count_hist.png", "union.png", measure.JSON_NAME):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "W_out skippable" in report and "n=256" in report
    assert results["flops"]["rows"][0][0] == "vit"


def _captured_maps(config, params, batch):
    """{block path: the map each MlpBlock hands its wo} of one batch (the test's own capture)."""
    from lazy_jax import input_pipeline
    from lazy_jax.models import get_model

    model = get_model(config.model, **input_pipeline.data_spec(config).model_sizes(config.model))
    maps = {}

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.module.name == "wo":
            maps["/".join(context.module.path)] = np.asarray(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        model.apply({"params": params}, batch, train=False)
    return [maps[k] for k in sorted(maps)]


def test_one_batch_statistics_equal_a_numpy_count(vit_run, tmp_path):
    from lazy_jax import input_pipeline
    from lazy_jax.checkpoint import Checkpointer, param_shapes

    out = measure.measure(
        workdir=str(vit_run), num_batches=1, out=str(tmp_path / "m1"), progress=False, sizes=(1, 3, 5)
    )
    results = json.loads((out / measure.JSON_NAME).read_text())
    m = measure.load_workdir(vit_run, dataset=None, split=None, data_dir=None, batch_size=None, count_hist_bins=32)
    ckpt = Checkpointer(vit_run / wd.CHECKPOINTS_DIR, async_save=False)
    state, _ = ckpt.restore_latest(m.exp.abstract_state, param_shapes(m.exp.abstract_state.params))
    ckpt.close()
    batch = next(iter(input_pipeline.eval_batches(m.config, 0, 1)))
    maps = _captured_maps(m.config, jax.device_get(state.params), batch)
    assert results["stacks"]["encoder"]["union_consecutive_sizes"] == [1, 3, 5]
    for layer, a_BTF in zip(results["stacks"]["encoder"]["layers"], maps):
        on_NF = (a_BTF > 0).reshape(-1, a_BTF.shape[-1])  # 64 images x 5 tokens, none padded
        freq_F = on_NF.mean(0)
        np.testing.assert_allclose(layer["nonzero_frac"], on_NF.mean(), rtol=1e-6)
        assert layer["dead_frac"] == np.mean(freq_F == 0) and layer["rare_frac"] == np.mean(freq_F < 0.1)
        hist, _ = np.histogram(np.clip(freq_F[freq_F > 0], 1e-4, 1), bins=np.logspace(-4, 0, 17))
        np.testing.assert_allclose(layer["freq_hist"], hist / freq_F.size, atol=1e-12)
        counts = on_NF.sum(-1)
        want = np.bincount(np.minimum(counts * 32 // a_BTF.shape[-1], 31), minlength=32) / len(counts)
        np.testing.assert_allclose(layer["count_hist"], want, atol=1e-7)
        # Consecutive windows of 3 and 5 tokens within each image (5 tokens: one window of each).
        for i, n in enumerate((1, 3, 5)):
            want = (a_BTF[:, :n] > 0).any(axis=1).mean() if n > 1 else on_NF.mean()
            np.testing.assert_allclose(layer["union_consecutive"][i], want, rtol=1e-6, err_msg=f"n={n}")
        np.testing.assert_allclose(layer["union_random_groups"], [320, 106, 64])


def test_bad_input_is_refused_before_any_work(vit_run, tmp_path):
    before = _snapshot(vit_run)
    out = tmp_path / "out"
    cases = [
        (dict(dataset="no_such_dataset"), "no_such_dataset"),
        (dict(sizes=(1, 321)), r"\[321\] are larger than the 64 x 5 = 320 tokens"),
        (dict(num_batches=0), "num_batches=0"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InputError, match=match):
            measure.measure(workdir=str(vit_run), out=str(out), progress=False, **kwargs)
    # A config that builds another model than the checkpoint holds (d_ff 256 instead of 512).
    other = tmp_path / "other"
    shutil.copytree(vit_run, other)
    config = json.loads((other / wd.CONFIG).read_text())
    config["model"]["d_ff"] = 256
    (other / wd.CONFIG).write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"\['kernel'\]: checkpoint \[128, 512\] vs config \[128, 256\]") as e:
        measure.measure(workdir=str(other), out=str(out), progress=False)
    # measure's own advice, not the trainer's: say what differs and which config it needs.
    assert "measure needs the config the run was trained with" in str(e.value) and "--start_afresh" not in str(e.value)
    # Another optimizer state (same parameters) is refused in the same words.
    config["model"]["d_ff"] = 512
    config["optimizer"]["name"] = "adafactor"
    (other / wd.CONFIG).write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"holds another optimizer state.*measure needs the config") as e:
        measure.measure(workdir=str(other), out=str(out), progress=False)
    assert "--start_afresh" not in str(e.value) and "--workdir" not in str(e.value).partition(": ")[2]
    with pytest.raises(InputError, match="no config.json"):
        measure.measure(workdir=str(tmp_path), out=str(out), progress=False)
    assert not out.exists()
    assert _snapshot(vit_run) == before


def test_cli_prints_one_error_line(vit_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lazy_jax.measure", f"--workdir={vit_run}", "--dataset=nope", f"--out={tmp_path}/o"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr
    assert "nope" in proc.stderr


# ----------------------------------------------------------------------------- Hugging Face T5

_spec = importlib.util.spec_from_file_location("hf_reference", REPO / "tests" / "hf_reference.py")
hf_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hf_reference)

# A tiny T5 v1.0 with the pydocs tokenizer's vocabulary (4100 ids, padded to 4224), and a gated one.
_MAKE_HF = """
import sys
from transformers import T5Config, T5ForConditionalGeneration
import torch
torch.manual_seed(0)
for name, proj in (("relu", "relu"), ("gated", "gated-gelu")):
    config = T5Config(vocab_size=4224, d_model=16, d_kv=4, d_ff=32, num_heads=2, num_layers=2,
                      num_decoder_layers=1, feed_forward_proj=proj, tie_word_embeddings=True)
    T5ForConditionalGeneration(config).save_pretrained(sys.argv[1] + "/" + name)
"""


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> Path:
    try:
        python = hf_reference.ensure_hf_python(log=lambda msg: print(msg, file=sys.stderr))
    except hf_reference.HfEnvUnavailable as e:
        pytest.skip(f"Hugging Face environment unavailable: {e}")
    out = tmp_path_factory.mktemp("hf_t5")
    subprocess.run([python, "-c", _MAKE_HF, str(out)], check=True, capture_output=True, timeout=600)
    return out


def test_hf_t5_on_pydocs(hf_dirs, pydocs_dir, tmp_path):
    out = measure.measure(
        hf_t5=str(hf_dirs / "relu"),
        dataset="pydocs",
        split="validation",
        data_dir=pydocs_dir,
        inputs_length=32,
        batch_size=16,
        num_batches=2,
        out=str(tmp_path / "m"),
        progress=False,
    )
    results = json.loads((out / measure.JSON_NAME).read_text())
    assert set(results["stacks"]) == {"encoder", "decoder"}
    assert [len(results["stacks"][s]["layers"]) for s in ("encoder", "decoder")] == [2, 1]
    assert results["stacks"]["encoder"]["tokens_per_batch"] == [16, 32]
    for stack in results["stacks"].values():
        for layer in stack["layers"]:
            assert 0.05 < layer["nonzero_frac"] < 0.95
            assert layer["union_random"][0] == pytest.approx(layer["nonzero_frac"], rel=1e-6)
            assert layer["union_consecutive"][0] == pytest.approx(layer["nonzero_frac"], rel=1e-6)
    assert [row[0] for row in results["flops"]["rows"]] == ["encoder", "decoder", "all"]


def test_gated_hf_t5_is_refused_by_name(hf_dirs, tmp_path):
    with pytest.raises(InputError, match="gated-gelu"):
        measure.measure(hf_t5=str(hf_dirs / "gated"), out=str(tmp_path / "m"), progress=False)
    assert not (tmp_path / "m").exists()
