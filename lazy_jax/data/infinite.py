"""Infinite image data: every draw is a fresh random deformation of a source image (as InfiMNIST).

The paper's infinite-data experiment needs a training stream that never shows an example twice
however long the run; a finite split runs out (`vision.check_infinite_data`). Here the stream
position still picks a source image as `vision.train_batches` does (shuffled epochs,
`lazy_jax.data.stream`), but each draw is warped by its own random affine map (rotation, scale,
shear, translation) and elastic field (uniform noise smoothed by a Gaussian, Simard et al. 2003),
drawn from numpy's PCG64 seeded by (shuffle_seed, seed, step, position in the global batch). So
a batch is a pure function of the seed and the step (resume is exact), and two draws of one
source image differ. Labels are the source image's training label (`vision.train_labels`: random
labels and label noise, keyed by the source image, apply as on the finite split); random inputs
are refused (`vision.check_data_config`). `vision.train_batches` comes here when
data.infinite=True on a digit dataset (`vision.INFINITE_SOURCE_DATASETS`).

No draw is ever repeated, whatever the run does: a draw's key holds its step, and every step of a
run, resumed or not, is a new one; so a resume may even change the batch size or the seeds.

Sizes are relative to the image, so 8x8 digits and 28x28 MNIST deform alike: the elastic field's
Gaussian has sigma = 4 / 28 of the side and its amplitude 34 * (side / 28)^2 (Simard's 4 and 34
at 28x28, the amplitude scaling with the side squared so that displacements scale with the side).
Pixels are sampled by a cubic spline with zeros outside (the digits' background), clipped and rounded back to uint8
and normalised as the real data are (`vision.normalize`), so they stay in [-1, 1]. The digits' ink
reaches the border of their 8x8 frame, so a shift or zoom moves some out: the mean pixel falls
from -0.40 to -0.48 there (tests/test_infinite.py bounds it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import ml_collections
import numpy as np
from scipy import ndimage

from lazy_jax.data import stream, vision
from lazy_jax.errors import InputError

_INFINITE_TAG = 0x1F1F1


@dataclasses.dataclass(frozen=True)
class Deformation:
    """Ranges of the random deformation (each drawn uniformly in [-x, x]); sizes relative to the side."""

    rotate_deg: float = 12.0
    scale: float = 0.1  # zoom factor 1 +- scale
    shear: float = 0.15
    translate: float = 0.06  # fraction of the side
    elastic_sigma: float = 4.0 / 28  # fraction of the side
    elastic_alpha: float = 34.0 / 28**2  # times side^2


DEFAULT = Deformation()


def sample_coords(shape_HW: tuple[int, int], rng: np.random.Generator, deform: Deformation = DEFAULT) -> np.ndarray:
    """[2, H, W]: the (row, column) each output pixel reads from, an affine map about the centre plus an elastic field."""
    h, w = shape_HW
    side = max(h, w)
    angle = np.deg2rad(rng.uniform(-deform.rotate_deg, deform.rotate_deg))
    zoom = 1.0 + rng.uniform(-deform.scale, deform.scale)
    shear = rng.uniform(-deform.shear, deform.shear)
    shift = rng.uniform(-deform.translate, deform.translate, size=2) * side
    cos, sin = np.cos(angle), np.sin(angle)
    # Output -> input: inverse zoom of a rotation times a shear, about the image centre.
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) / zoom
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    grid = np.stack([rows, cols]).reshape(2, -1) - centre[:, None]
    coords = (matrix @ grid + centre[:, None] + shift[:, None]).reshape(2, h, w)
    sigma, alpha = deform.elastic_sigma * side, deform.elastic_alpha * side**2
    for axis in range(2):
        noise = rng.uniform(-1.0, 1.0, size=(h, w))
        coords[axis] += alpha * ndimage.gaussian_filter(noise, sigma, mode="constant")
    return coords


def warp(image_HWC: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """image sampled at `coords` [2, H, W] (cubic spline, 0 outside), float64 [H, W, C].

    Cubic, not bilinear: on 8x8 digits bilinear sampling blurs the strokes (pixel std 0.75 -> 0.63 in
    [-1, 1]), the spline keeps them sharper (0.69); it is exact at integer coordinates.
    """
    return np.stack(
        [
            ndimage.map_coordinates(image_HWC[..., c].astype(np.float64), coords, order=3, mode="constant", cval=0.0)
            for c in range(image_HWC.shape[-1])
        ],
        axis=-1,
    )


def draw_rng(shuffle_seed: int, seed: int, step: int, position: int) -> np.random.Generator:
    """The generator of one draw: position is the example's place in the global batch of `step`."""
    return np.random.default_rng([shuffle_seed, _INFINITE_TAG, seed, step, position])


def deformed_batch(
    images_NHWC: np.ndarray,
    labels_N: np.ndarray,
    *,
    step: int,
    positions_N: np.ndarray,
    seed: int = 0,
    shuffle_seed: int = 0,
    deform: Deformation = DEFAULT,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 source images [N, H, W, C] -> (deformed float32 images in [-1, 1], the labels unchanged).

    Image i is warped by the draw keyed by (shuffle_seed, seed, step, positions_N[i]).
    """
    out = np.empty(images_NHWC.shape, np.uint8)
    for i, (image_HWC, position) in enumerate(zip(images_NHWC, positions_N)):
        rng = draw_rng(shuffle_seed, seed, step, int(position))
        warped = warp(image_HWC, sample_coords(image_HWC.shape[:2], rng, deform))
        out[i] = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
    return vision.normalize(out), np.asarray(labels_N, np.int32)


def train_batches(
    config_data: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    start_step: int,
    process_index: int = 0,
    process_count: int = 1,
    seed: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """`vision.train_batches` with every image freshly deformed; never ends, never repeats a draw.

    The batch of step s is a pure function of (config_data, seed, s, process_index,
    process_count); a process's share of a global batch is its block of positions, as there.

    Yields:
      {'image': float32 [b, H, W, C] in [-1, 1], 'label': int32 [b]} (+ 'label_noisy': bool [b]
      when label_noise > 0), b = global_batch_size // process_count.
    """
    vision.check_data_config(config_data)
    if config_data.random_inputs:
        raise InputError(
            "data.random_inputs=True is not allowed with the infinite source: it deforms the real digits, and "
            "noise has no digit to deform"
        )
    b = stream.local_batch_size(global_batch_size, process_count, process_index)
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    reader = vision.SplitReader(config_data.name, config_data.train_split, config_data.data_dir, config_data.image_size)
    shuffle_seed = int(config_data.shuffle_seed)

    def make_batch(step: int) -> dict[str, np.ndarray]:
        positions = stream.local_positions(step, global_batch_size, process_index, process_count)
        indices = stream.example_indices(positions, reader.num_examples, shuffle_seed, seed)
        images_u8, labels = reader.get(indices)
        # The place in the global batch, so any process count draws the same deformations.
        images, _ = deformed_batch(
            images_u8,
            labels,
            step=step,
            positions_N=positions - step * global_batch_size,
            seed=seed,
            shuffle_seed=shuffle_seed,
        )
        assert images.shape[0] == b
        return {"image": images, **vision.train_labels(config_data, indices, labels, reader)}

    return vision.iterate_steps(make_batch, range(start_step, 2**62), config_data.num_workers)
