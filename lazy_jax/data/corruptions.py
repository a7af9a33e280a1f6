"""Input corruptions of ImageNet-C (Hendrycks & Dietterich, ICLR 2019), applied to eval images.

`corrupt(images_NHWC, name, severity, indices_N)` takes uint8 images (0..255) and returns float32
images in [0, 255], as the reference code returns them (`np.clip(..., 0, 1) * 255`), so the
project's normalisation (`vision.normalize`) applies unchanged. Unlike the released ImageNet-C
files there is no rounding to uint8 and no JPEG re-encoding: the corruption is the formula alone.

The constants are those of `make_imagenet_c.py` in github.com/hendrycks/robustness
(ImageNet-C/create_c/), the same in the `imagecorruptions` package; x is the image in [0, 1]:
  gaussian_noise  clip(x + N(0, c^2))                c = [.08, .12, .18, .26, .38]
  shot_noise      clip(Poisson(x * c) / c)            c = [60, 25, 12, 5, 3]
  impulse_noise   skimage random_noise(x, 's&p', amount=c): each entry independently becomes
                  1 or 0 (one half each) with probability c
                                                      c = [.03, .06, .09, .17, .27]
  speckle_noise   clip(x + x * N(0, c^2))             c = [.15, .2, .35, .45, .6]
  contrast        clip((x - m) * c + m), m the per-channel mean over the image
                                                      c = [.4, .3, .2, .1, .05]
  brightness      HSV value v -> clip(v + c), hue and saturation kept
                                                      c = [.1, .2, .3, .4, .5]
Brightness needs no HSV round trip: with hue and saturation fixed every channel scales with v,
so rgb -> rgb * v'/v (and a black pixel, saturation 0, becomes grey v').

Determinism: the noise of example i comes from `np.random.default_rng([SEED, tag(name),
severity, i])`, so an image is corrupted the same way whatever the eval batch size, the process
count or the order of evaluation.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from lazy_jax.errors import InputError

SEED = 0xC0DE
SEVERITIES = (1, 2, 3, 4, 5)
# The metrics.jsonl split of a corrupted eval: eval_corrupt/<name>/s<k>, and .../mean over severities.
SPLIT_PREFIX = "eval_corrupt/"

CONSTANTS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
}


def _gaussian_noise(x_HWC, c, rng):
    return np.clip(x_HWC + rng.normal(size=x_HWC.shape, scale=c), 0, 1)


def _shot_noise(x_HWC, c, rng):
    return np.clip(rng.poisson(x_HWC * c) / c, 0, 1)


def _impulse_noise(x_HWC, c, rng):
    flipped = rng.random(x_HWC.shape) <= c
    salted = rng.random(x_HWC.shape) <= 0.5
    return np.where(flipped, np.where(salted, 1.0, 0.0), x_HWC)


def _speckle_noise(x_HWC, c, rng):
    return np.clip(x_HWC + x_HWC * rng.normal(size=x_HWC.shape, scale=c), 0, 1)


def _contrast(x_HWC, c, rng):
    mean_11C = x_HWC.mean(axis=(0, 1), keepdims=True)
    return np.clip((x_HWC - mean_11C) * c + mean_11C, 0, 1)


def _brightness(x_HWC, c, rng):
    value_HW1 = x_HWC.max(axis=-1, keepdims=True)
    new_HW1 = np.clip(value_HW1 + c, 0, 1)
    scaled = x_HWC * (new_HW1 / np.where(value_HW1 > 0, value_HW1, 1.0))
    return np.clip(np.where(value_HW1 > 0, scaled, new_HW1), 0, 1)


_FUNCTIONS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "contrast": _contrast,
    "brightness": _brightness,
}
CORRUPTIONS = tuple(CONSTANTS)


def example_rng(name: str, severity: int, index: int) -> np.random.Generator:
    """The generator of example `index`'s noise (a pure function of the three)."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode()), severity, int(index)])


def corrupt(images_NHWC: np.ndarray, name: str, severity: int, indices_N: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] of examples `indices_N` -> float32 [N, H, W, C] in [0, 255]."""
    check(name, severity)
    c = CONSTANTS[name][severity - 1]
    fn = _FUNCTIONS[name]
    out = [
        fn(np.asarray(x, np.float64) / 255.0, c, example_rng(name, severity, i)) for x, i in zip(images_NHWC, indices_N)
    ]
    return (np.stack(out) * 255.0).astype(np.float32).reshape(images_NHWC.shape)


def check(name: str, severity: int) -> None:
    if name not in CONSTANTS:
        raise InputError(f"corruption {name!r} is unknown; allowed: {list(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise InputError(f"corruption severity {severity!r} is not allowed; use one of {list(SEVERITIES)}")


def parse_names(text) -> tuple[str, ...]:
    """config.eval_corruptions 'gaussian_noise,shot_noise' -> names ('' = none); unknown ones refused."""
    names = tuple(p.strip() for p in str(text or "").split(",") if p.strip())
    for name in names:
        if name not in CONSTANTS:
            raise InputError(f"eval_corruptions: {name!r} is unknown; allowed: {list(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise InputError(f"eval_corruptions={text!r} names a corruption twice")
    return names


def parse_severities(text) -> tuple[int, ...]:
    """config.eval_corruption_severities '1,2,3,4,5' -> (1, 2, 3, 4, 5); anything else refused."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or any(not p.isdigit() or int(p) not in SEVERITIES for p in parts) or len(set(parts)) != len(parts):
        raise InputError(
            f"eval_corruption_severities={text!r} is not allowed: use distinct severities from {list(SEVERITIES)}, "
            "comma-separated, e.g. '1,2,3,4,5'"
        )
    return tuple(int(p) for p in parts)


# What the eval_corrupt/<name>/mean split averages over severities.
MEAN_KEYS = ("loss", "accuracy", "ece", "nonzero_frac/mean")


def mean_over_severities(results: list[dict]) -> dict[str, float]:
    """The eval metrics of one corruption at each severity -> their unweighted mean (MEAN_KEYS)."""
    return {k: float(np.mean([float(r[k]) for r in results])) for k in MEAN_KEYS}


def split_name(name: str, severity: int | None) -> str:
    """'eval_corrupt/<name>/s<k>', or 'eval_corrupt/<name>/mean' for severity None."""
    return f"{SPLIT_PREFIX}{name}/{'mean' if severity is None else f's{severity}'}"
