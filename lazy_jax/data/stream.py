"""Index arithmetic of the seeded, shuffled training stream (exact resume).

The training stream is the concatenation of epochs; epoch e is a permutation
of range(N) drawn from numpy's PCG64 seeded by (shuffle_seed, seed, e), so
every epoch is reshuffled. Stream position g holds example perm_{g // N}[g % N].

Global batch of step s = stream positions [s*B, (s+1)*B). Process p of P gets
the contiguous block [s*B + p*b, s*B + (p+1)*b) with b = B / P, so that the
process-local batches, concatenated in process order (what
`jax.make_array_from_process_local_data` does along a batch axis), are exactly
the single-process global batch. Everything is a pure function of
(shuffle_seed, seed, step, process_index, process_count): resuming at step s
just starts there.
"""

from __future__ import annotations

import numpy as np

from lazy_jax.data import cache
from lazy_jax.errors import InputError


def local_batch_size(global_batch_size: int, process_count: int, process_index: int = 0) -> int:
    """Per-process batch size; raises if the global batch does not divide or process_index is out of range."""
    if global_batch_size <= 0 or process_count <= 0:
        raise InputError(
            f"global_batch_size={global_batch_size} and process_count={process_count} must both be positive."
        )
    if global_batch_size % process_count:
        raise InputError(
            f"global_batch_size={global_batch_size} is not divisible by "
            f"process_count={process_count}; choose a multiple of {process_count}."
        )
    if not 0 <= process_index < process_count:
        raise InputError(f"process_index={process_index} not in [0, {process_count}).")
    return global_batch_size // process_count


# The current and the next epoch: a permutation holds N ints, and N can be ~10^7.
_EPOCH_PERMUTATIONS = cache.BoundedCache("stream.epoch_permutations", max_entries=2)


def epoch_permutation(num_examples: int, shuffle_seed: int, seed: int, epoch: int) -> np.ndarray:
    def make() -> np.ndarray:
        perm = np.random.default_rng([shuffle_seed, seed, epoch]).permutation(num_examples)
        return perm.astype(np.int32 if num_examples < 2**31 else np.int64)

    return _EPOCH_PERMUTATIONS.get((num_examples, shuffle_seed, seed, epoch), make)


def example_indices(positions: np.ndarray, num_examples: int, shuffle_seed: int, seed: int) -> np.ndarray:
    """Example index held at each stream position."""
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(positions.shape, np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = epoch_permutation(num_examples, shuffle_seed, seed, int(epoch))[offsets[sel]]
    return out


def local_positions(step: int, global_batch_size: int, process_index: int, process_count: int) -> np.ndarray:
    """Stream positions of process `process_index`'s share of step `step`."""
    b = local_batch_size(global_batch_size, process_count)
    start = step * global_batch_size + process_index * b
    return np.arange(start, start + b, dtype=np.int64)
