"""Tests of `sparsity.union_active_frac`: the share of neurons active on at least one of n pooled tokens.

Each number is checked against a count written here in numpy: consecutive windows of each
sequence's valid tokens, and for the random pooling (whose order numpy cannot replay) maps built
so that the answer does not depend on the order: one distinct neuron per token, padding rows
all on (any padding in a group would show), and one group holding every valid token.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lazy_jax import sparsity
from lazy_jax.errors import InputError


def _random_map(seed=0, shape=(4, 8, 16), p_on=0.3):
    rng = np.random.default_rng(seed)
    sign = np.where(rng.uniform(size=shape) < p_on, 1.0, -1.0)
    return (sign * rng.uniform(0.1, 1.0, size=shape)).astype(np.float32)


MASK_BT = np.array(
    [[1] * 8, [1] * 5 + [0] * 3, [1, 1, 0, 1, 1, 1, 0, 1], [0] * 8],  # full, padded at the end, holes, empty
    np.float32,
)


def _numpy_consecutive(a_BTF, mask_BT, n):
    """(mean union share over full windows of each row's valid tokens in order, their number)."""
    shares = []
    for a_TF, m_T in zip(a_BTF, mask_BT):
        on_VF = a_TF[m_T > 0] > 0
        for k in range(len(on_VF) // n):
            shares.append(on_VF[k * n : (k + 1) * n].any(axis=0).mean())
    return (np.mean(shares) if shares else 0.0), len(shares)


@pytest.mark.parametrize("consecutive", [False, True])
def test_n1_equals_nonzero_frac_to_the_bit(consecutive):
    a = jnp.asarray(_random_map())
    for mask in (None, jnp.asarray(MASK_BT)):
        union, groups = sparsity.union_active_frac(a, mask, (1,), consecutive=consecutive)
        stats = sparsity.activation_stats(a, mask)
        assert float(union[0]) == float(stats["nonzero_frac"])
        assert float(groups[0]) == float(stats["num_tokens"])
    # And against a numpy count.
    want = (_random_map()[MASK_BT > 0] > 0).mean()
    np.testing.assert_allclose(float(union[0]), want, rtol=1e-6)


def test_consecutive_windows_equal_numpy():
    a = _random_map(1)
    sizes = (1, 2, 3, 4, 5, 8)
    union, groups = sparsity.union_active_frac(jnp.asarray(a), jnp.asarray(MASK_BT), sizes, consecutive=True)
    for i, n in enumerate(sizes):
        want, count = _numpy_consecutive(a, MASK_BT, n)
        assert float(groups[i]) == count, n
        np.testing.assert_allclose(float(union[i]), want, rtol=1e-6, err_msg=f"n={n}")
    # Row 2 has 6 valid tokens in holes: its windows of 3 hold tokens 0,1,3 and 4,5,7, never padding.
    assert float(groups[sizes.index(3)]) == 8 // 3 + 5 // 3 + 6 // 3


def test_random_groups_are_disjoint_valid_tokens():
    """One distinct neuron per valid token, padding all on: a group of n valid tokens has n active."""
    b, t = MASK_BT.shape
    d_ff = b * t
    a = np.full((b, t, d_ff), -1.0, np.float32)
    a[MASK_BT == 0] = 1.0  # padding: every neuron on
    a[MASK_BT > 0] = np.where(np.eye(d_ff)[: int(MASK_BT.sum())] > 0, 1.0, -1.0)
    valid = int(MASK_BT.sum())  # 19
    sizes = (1, 2, 3, 4, 8, 16, valid)
    union, groups = sparsity.union_active_frac(jnp.asarray(a), jnp.asarray(MASK_BT), sizes)
    for i, n in enumerate(sizes):
        assert float(groups[i]) == valid // n, n
        np.testing.assert_allclose(float(union[i]), n / d_ff, rtol=1e-6, err_msg=f"n={n}")


def test_random_one_group_of_every_valid_token_is_their_union():
    a = _random_map(2, p_on=0.05)
    valid = int(MASK_BT.sum())
    union, groups = sparsity.union_active_frac(jnp.asarray(a), jnp.asarray(MASK_BT), (valid,))
    assert float(groups[0]) == 1
    np.testing.assert_allclose(float(union[0]), (a[MASK_BT > 0] > 0).any(axis=0).mean(), rtol=1e-6)


@pytest.mark.parametrize("consecutive", [False, True])
def test_monotone_in_n_when_groups_tile(consecutive):
    a = jnp.asarray(_random_map(3, shape=(4, 16, 64), p_on=0.1))
    sizes = (1, 2, 4, 8, 16) + (() if consecutive else (32, 64))
    union, groups = sparsity.union_active_frac(a, None, sizes, consecutive=consecutive)
    union = np.asarray(union)
    assert np.all(np.diff(union) > 0), union
    assert np.asarray(groups).tolist() == [64 // n for n in sizes]


def test_random_pooling_is_fixed_by_the_seed():
    a = jnp.asarray(_random_map(4, shape=(2, 32, 32)))
    first = sparsity.union_active_frac(a, None, (4,))[0]
    again = jax.jit(lambda x: sparsity.union_active_frac(x, None, (4,))[0])(a)
    other = sparsity.union_active_frac(a, None, (4,), seed=1)[0]
    assert float(first[0]) == float(again[0])
    assert float(first[0]) != float(other[0])


def test_all_padded_gives_zero_groups_not_nan():
    a = jnp.ones((2, 3, 8))
    for consecutive in (False, True):
        union, groups = sparsity.union_active_frac(a, jnp.zeros((2, 3)), (1, 2), consecutive=consecutive)
        assert np.asarray(union).tolist() == [0.0, 0.0] and np.asarray(groups).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("n", "consecutive", "limit"), [(0, False, 24), (25, False, 24), (9, True, 8), (2.0, True, 8)])
def test_sizes_beyond_the_tokens_are_refused_by_name(n, consecutive, limit):
    with pytest.raises(InputError, match=rf"n={n!r} .* 1 <= n <= {limit}"):
        sparsity.union_active_frac(jnp.ones((3, 8, 4)), None, (1, n), consecutive=consecutive)


# ----------------------------------------------------------------------------- at evaluation (model.union_sizes)


def test_eval_union_combines_batches_by_groups(digits_dir):
    """Consecutive windows lie in one sequence, so the union over padded eval batches equals numpy over
    all 300 examples; random groups number floor(valid tokens of a batch / n) per batch."""
    import flax.linen as nn

    from lazy_jax import input_pipeline
    from lazy_jax.config_base import load_config
    from lazy_jax.train import Experiment
    from tests.model_helpers import random_variables
    from tests.test_eval import digits_test_split

    config = load_config("configs/vit.py:test")
    config.data.data_dir = digits_dir
    config.eval_batch_size = 64  # 300 = 4 * 64 + 44
    config.model.union_sizes = "1,2,4,64"
    exp = Experiment(config, input_pipeline.data_spec(config))
    images_NHWC, _ = digits_test_split(digits_dir)
    variables = random_variables(exp.model, {"image": images_NHWC[:1]}, seed=3)
    got = exp.evaluate(variables["params"], input_pipeline.eval_batches(config, 0, 1))

    maps = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.name == "wo":
            maps.append(np.asarray(args[0]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        exp.model.apply(variables, {"image": images_NHWC}, train=False)
    assert len(maps) == 6 and maps[0].shape[:2] == (300, 5)
    for i, a_NTF in enumerate(maps):
        random_S = got[f"union_random/encoder/layer_{i:02d}"]
        consecutive_S = got[f"union_consecutive/encoder/layer_{i:02d}"]
        nonzero = got[f"nonzero_frac/encoder/layer_{i:02d}"]
        assert random_S[0] == pytest.approx(nonzero, rel=1e-6) and consecutive_S[0] == pytest.approx(nonzero, rel=1e-6)
        for j, n in enumerate((1, 2, 4)):
            want, _ = _numpy_consecutive(a_NTF, np.ones(a_NTF.shape[:2]), n)
            np.testing.assert_allclose(consecutive_S[j], want, rtol=1e-5, err_msg=f"layer {i} n={n}")
        assert np.isnan(consecutive_S[3])  # 64 > 5 tokens per image
        assert np.all(np.diff(random_S) > 0)
        # n = 64: one group per 64 valid tokens of each batch (4 x 5 of 320, 4 of the last 220),
        # each at most every neuron and at least the share active on one token.
        assert nonzero < random_S[3] <= 1.0


def test_union_sizes_beyond_an_eval_batch_are_refused_before_the_workdir(digits_dir, tmp_path):
    from lazy_jax.config_base import load_config
    from lazy_jax.run import train_and_evaluate

    config = load_config("configs/vit.py:test")
    config.data.data_dir = digits_dir
    config.eval_batch_size = 16  # 16 images x 5 tokens
    config.model.union_sizes = "1,2,81"
    with pytest.raises(
        InputError, match=r"model.union_sizes='1,2,81' does not fit an eval batch of eval_batch_size=16"
    ):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config.model.union_sizes = "1,0"
    with pytest.raises(InputError, match=r"model.union_sizes='1,0' is not allowed: use distinct positive integers"):
        train_and_evaluate(config, tmp_path / "run")
