"""lazy_jax.xla_flags: the entry points' default XLA flags, never over a flag the user set."""

from lazy_jax import xla_flags


def test_defaults_are_added_once_and_a_users_setting_wins():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_flags.apply(env) == "--xla_force_host_platform_device_count=8 --xla_gpu_enable_triton_gemm=false"
    assert xla_flags.apply(env) == env["XLA_FLAGS"]  # applying again adds nothing
    assert xla_flags.apply({}) == "--xla_gpu_enable_triton_gemm=false"
    user = {"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=true"}
    assert xla_flags.apply(user) == "--xla_gpu_enable_triton_gemm=true"


def test_decoding_keeps_xlas_triton_gemms():
    assert xla_flags.apply({}, defaults=xla_flags.DECODING) == "--xla_gpu_enable_triton_gemm=true"
    user = {"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=false"}
    assert xla_flags.apply(user, defaults=xla_flags.DECODING) == "--xla_gpu_enable_triton_gemm=false"
