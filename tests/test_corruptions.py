"""ImageNet-C corruptions of the eval images (lazy_jax.data.corruptions) and the corrupted evals of a run.

Each corruption is checked against its formula written here (Hendrycks & Dietterich 2019's
make_imagenet_c.py) on fixed images, with the generator seeded as the module documents; the
noise scale per severity against the constants, clipping, determinism, and independence from
the eval batch size. One tiny run evaluates corrupted inputs end to end.
"""

import colorsys
import json
import signal
import threading
import zlib

import numpy as np
import pytest

from lazy_jax import input_pipeline, report, report_figures
from lazy_jax.config_base import load_config
from lazy_jax.config_checks import validate_config
from lazy_jax.data import corruptions
from lazy_jax.errors import InputError
from lazy_jax.run import train_and_evaluate
from lazy_jax.workdir import read_metrics

GAUSSIAN = [0.08, 0.12, 0.18, 0.26, 0.38]
SHOT = [60, 25, 12, 5, 3]
IMPULSE = [0.03, 0.06, 0.09, 0.17, 0.27]
SPECKLE = [0.15, 0.2, 0.35, 0.45, 0.6]
CONTRAST = [0.4, 0.3, 0.2, 0.1, 0.05]
BRIGHTNESS = [0.1, 0.2, 0.3, 0.4, 0.5]


def rng_of(name, severity, index):
    return np.random.default_rng([0xC0DE, zlib.crc32(name.encode()), severity, index])


def images(n=3, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_noises_equal_their_formulas(severity):
    x_u8, idx = images(), np.array([5, 17, 2])
    x = x_u8 / 255.0
    expected = {
        "gaussian_noise": lambda x, r: np.clip(x + r.normal(size=x.shape, scale=GAUSSIAN[severity - 1]), 0, 1),
        "shot_noise": lambda x, r: np.clip(r.poisson(x * SHOT[severity - 1]) / SHOT[severity - 1], 0, 1),
        "speckle_noise": lambda x, r: np.clip(x + x * r.normal(size=x.shape, scale=SPECKLE[severity - 1]), 0, 1),
    }
    for name, formula in expected.items():
        got = corruptions.corrupt(x_u8, name, severity, idx)
        assert got.dtype == np.float32 and got.shape == x_u8.shape
        want = np.stack([formula(x[j], rng_of(name, severity, i)) for j, i in enumerate(idx)]) * 255
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4, err_msg=name)
    # skimage's random_noise(mode='s&p', amount=c): flip with probability c, then salt or pepper one half each.
    got = corruptions.corrupt(x_u8, "impulse_noise", severity, idx)
    for j, i in enumerate(idx):
        r = rng_of("impulse_noise", severity, i)
        flipped, salted = r.random(x[j].shape) <= IMPULSE[severity - 1], r.random(x[j].shape) <= 0.5
        want = np.where(flipped & salted, 1.0, np.where(flipped, 0.0, x[j])) * 255
        np.testing.assert_allclose(got[j], want, atol=1e-4)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_noise_scale_per_severity_and_clipping(severity):
    """On a mid-grey image (0.5, clipping rare) the noise has ImageNet-C's scale."""
    grey = np.full((1, 64, 64, 3), 128, np.uint8)
    x = 128 / 255
    noise = corruptions.corrupt(grey, "gaussian_noise", severity, [0]) / 255 - x
    if severity <= 3:  # at 0.26 and 0.38 clipping at 0 and 1 shrinks the spread
        assert noise.std() == pytest.approx(GAUSSIAN[severity - 1], rel=0.05)
    shot = corruptions.corrupt(grey, "shot_noise", severity, [0]) / 255
    c = SHOT[severity - 1]
    assert set(np.unique(np.round(shot * c, 4))) <= set(range(c + 1))  # multiples of 1/c, clipped to 1
    impulse = corruptions.corrupt(grey, "impulse_noise", severity, [0])
    flipped = impulse != grey
    assert flipped.mean() == pytest.approx(IMPULSE[severity - 1], abs=0.01)
    assert set(np.unique(impulse[flipped])) <= {0.0, 255.0}
    for name in corruptions.CORRUPTIONS:
        out = corruptions.corrupt(images(), name, severity, [0, 1, 2])
        assert out.min() >= 0 and out.max() <= 255, name


def test_contrast_and_brightness_equal_their_formulas():
    x_u8 = images(2)
    x = x_u8 / 255.0
    for severity in (1, 5):
        mean = x.mean(axis=(1, 2), keepdims=True)
        want = np.clip((x - mean) * CONTRAST[severity - 1] + mean, 0, 1) * 255
        np.testing.assert_allclose(corruptions.corrupt(x_u8, "contrast", severity, [0, 1]), want, rtol=1e-6, atol=1e-4)
        # Brightness adds c to the HSV value, through the standard library's conversions.
        c = BRIGHTNESS[severity - 1]
        got = corruptions.corrupt(x_u8, "brightness", severity, [0, 1])
        for pixel, out in zip(x.reshape(-1, 3)[:200], got.reshape(-1, 3)[:200]):
            h, s, v = colorsys.rgb_to_hsv(*pixel)
            np.testing.assert_allclose(out, np.array(colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))) * 255, atol=1e-3)
    black = np.zeros((1, 2, 2, 3), np.uint8)
    np.testing.assert_allclose(corruptions.corrupt(black, "brightness", 2, [0]), 0.2 * 255, rtol=1e-6)


def test_deterministic_per_example_and_independent_of_batching():
    x = images(4)
    whole = corruptions.corrupt(x, "gaussian_noise", 2, [10, 11, 12, 13])
    np.testing.assert_array_equal(whole, corruptions.corrupt(x, "gaussian_noise", 2, [10, 11, 12, 13]))
    np.testing.assert_array_equal(whole[2:], corruptions.corrupt(x[2:], "gaussian_noise", 2, [12, 13]))
    assert not np.array_equal(whole, corruptions.corrupt(x, "gaussian_noise", 3, [10, 11, 12, 13]))
    assert not np.array_equal(whole[0], corruptions.corrupt(x[:1], "gaussian_noise", 2, [11])[0])


def test_eval_batches_are_the_same_images_at_any_batch_size(digits_dir):
    config = load_config("configs/vit.py:test")
    config.data.data_dir = digits_dir

    def valid_images(batch_size):
        config.eval_batch_size = batch_size
        batches = list(input_pipeline.eval_batches(config, 0, 1, ("shot_noise", 4)))
        return np.concatenate([b["image"][b["mask"] > 0] for b in batches])

    eight, twenty_four = valid_images(8), valid_images(24)  # 300 = 37 * 8 + 4 = 12 * 24 + 12
    assert eight.shape == (300, 8, 8, 1)
    np.testing.assert_array_equal(eight, twenty_four)
    clean = np.concatenate([b["image"][b["mask"] > 0] for b in input_pipeline.eval_batches(config, 0, 1)])
    # Corrupted before the normalisation to [-1, 1]: x in [0, 1] -> 2x - 1.
    assert eight.min() >= -1 and eight.max() <= 1 and not np.array_equal(eight, clean)
    x_u8 = np.rint((clean[:5] + 1) * 127.5).astype(np.uint8)
    want = corruptions.corrupt(x_u8, "shot_noise", 4, np.arange(5)) * (2 / 255) - 1
    np.testing.assert_allclose(eight[:5], want, atol=1e-6)


@pytest.mark.parametrize(
    "key, value, named",
    [
        ("eval_corruptions", "gaussian_noise,fog_of_war", "'fog_of_war' is unknown; allowed: ['gaussian_noise'"),
        ("eval_corruption_severities", "1,6", "eval_corruption_severities='1,6' is not allowed"),
        ("eval_corruption_severities", "", "use distinct severities from [1, 2, 3, 4, 5]"),
    ],
)
def test_bad_corruption_settings_are_refused_by_name(key, value, named):
    config = load_config("configs/vit.py:test")
    config[key] = value
    with pytest.raises(InputError, match=named.replace("[", r"\[").replace("(", r"\(")):
        validate_config(config)


def test_corruptions_of_a_text_task_are_refused():
    config = load_config("configs/t5.py:test")
    config.eval_corruptions = "gaussian_noise"
    with pytest.raises(InputError, match="eval_corruptions='gaussian_noise' is not allowed for task='seq2seq'"):
        validate_config(config)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def corrupted_run(digits_dir, tmp_path_factory):
    """configs/vit.py:test (6 steps, evals at 1, 3, 6; its train step compiled once for the session's
    other runs) with two corruptions at two severities and the union, stopped by SIGTERM in its last
    corrupted eval and resumed."""
    config = load_config("configs/vit.py:test")
    config.data.data_dir = digits_dir
    config.eval_corruptions = "gaussian_noise,impulse_noise"
    config.eval_corruption_severities = "2,5"
    config.model.union_sizes = "1,2,8,32"
    workdir = tmp_path_factory.mktemp("corrupted_run")
    real = input_pipeline.eval_batches

    def preempted(config, pi, pc, corruption=None):
        for batch in real(config, pi, pc, corruption):
            if corruption == ("impulse_noise", 5):
                signal.pthread_kill(
                    threading.main_thread().ident, signal.SIGTERM
                )  # to the main thread, never an XLA thread
            yield batch

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(input_pipeline, "eval_batches", preempted)
        out = train_and_evaluate(config, workdir)
    assert out["preempted_at"] == 6
    assert not [r for r in read_metrics(workdir) if r["split"] != "train" and r["step"] == 6]  # nothing of the cut eval
    train_and_evaluate(config, workdir)  # does the pending eval first, corrupted ones included
    return workdir


def test_run_writes_corrupted_eval_rows_at_the_final_step(corrupted_run):
    rows = read_metrics(corrupted_run)
    evals = {(r["step"], r["split"]): r for r in rows if r["split"] != "train"}
    names = [f"eval_corrupt/{c}/{s}" for c in ("gaussian_noise", "impulse_noise") for s in ("s2", "s5", "mean")]
    assert sorted(evals) == sorted([(1, "eval"), (3, "eval"), (6, "eval")] + [(6, n) for n in names])
    clean = evals[(6, "eval")]
    for name in names:
        row = evals[(6, name)]
        if name.endswith("mean"):
            per = [evals[(6, name.replace("mean", s))] for s in ("s2", "s5")]
            assert set(row) == {"step", "split", "loss", "accuracy", "ece", "nonzero_frac/mean"}
            for k in ("accuracy", "ece", "nonzero_frac/mean"):
                assert row[k] == pytest.approx(np.mean([p[k] for p in per]), rel=1e-9)
        else:
            assert set(row) == set(clean)  # loss, accuracy, ece, every nonzero_frac
            assert 0 <= row["ece"] <= 1
    # Noise moves the predictions: severity 5 is not the clean eval.
    assert evals[(6, "eval_corrupt/gaussian_noise/s5")]["loss"] != clean["loss"]
    assert len(rows) == len({(r["step"], r["split"]) for r in rows})


def test_union_at_n1_is_the_nonzero_share_of_the_trained_eval(corrupted_run):
    rows = {r["split"]: r for r in read_metrics(corrupted_run) if r["step"] == 6}
    stats = report.latest_stats(corrupted_run)
    step, _, arrays = stats["eval"]
    assert step == 6
    for i in range(6):
        union = arrays[f"union_random/encoder/layer_{i:02d}"]
        consecutive = arrays[f"union_consecutive/encoder/layer_{i:02d}"]
        nonzero = rows["eval"][f"nonzero_frac/encoder/layer_{i:02d}"]
        assert union[0] == pytest.approx(nonzero, rel=1e-6) and consecutive[0] == pytest.approx(nonzero, rel=1e-6)
        assert np.all(np.diff(union) > 0)
        # A ViT-Mu/4 sequence has 5 tokens: no consecutive group of 8 or 32.
        assert consecutive[1] > consecutive[0] and np.isnan(consecutive[2:]).all()
    assert "eval_corrupt/gaussian_noise/s2" in stats  # its stats file round-trips the '/' of its split
    assert "union_random/encoder/layer_00" not in json.dumps(rows["train"])


def test_report_draws_the_reliability_diagram_and_the_corruption_table(corrupted_run):
    md = report.write_report(corrupted_run).read_text()
    assert "![reliability eval](reliability_eval.png)" in md
    assert (corrupted_run / "report" / "reliability_eval.png").stat().st_size > 10_000
    _, _, arrays = report.latest_stats(corrupted_run)["eval"]
    fig = report_figures.reliability_figure(arrays, "eval", 6)
    acc_ax, count_ax = fig.axes
    used = arrays["calibration/count"] > 0
    heights = [p.get_height() for p in acc_ax.patches]
    np.testing.assert_allclose(heights, arrays["calibration/accuracy"][used])
    np.testing.assert_allclose([p.get_x() for p in acc_ax.patches], np.arange(15)[used] / 15)
    np.testing.assert_allclose([p.get_height() for p in count_ax.patches], arrays["calibration/count"])
    assert sum(p.get_height() for p in count_ax.patches) == 300  # every digits test example, no padding
    final = [r for r in read_metrics(corrupted_run) if r["split"] == "eval"][-1]
    assert acc_ax.get_title() == f"ECE {final['ece']:.4f}"
    row = [r for r in read_metrics(corrupted_run) if r["split"] == "eval_corrupt/impulse_noise/mean"][0]
    assert f"| impulse_noise | mean | {100 * row['accuracy']:.2f}% | {row['ece']:.4f} |" in md
    assert "## Forward FLOPs" in md and "| eval | 6 |" in md
    assert "nonzero_frac_eval_corrupt" not in md  # no per-split figures of one-row corrupted splits
    # The union curve against n, from the same stats file and config.json's model.union_sizes.
    assert "![union eval](union_eval.png)" in md
    (union_ax,) = [ax for ax in report_figures.union_figure(arrays, [1, 2, 8, 32], "eval", 6).axes if ax.get_title()]
    lines = union_ax.get_lines()
    assert list(lines[0].get_xdata()) == [1, 2, 8, 32] and lines[0].get_label() == "layer 00"
    np.testing.assert_allclose(lines[0].get_ydata(), 100 * arrays["union_random/encoder/layer_00"])
    np.testing.assert_allclose(lines[1].get_ydata(), 100 * arrays["union_consecutive/encoder/layer_00"])
