"""Tests run on the CPU with 8 fake devices, so mesh tests need no accelerator."""
import os

os.environ["JAX_PLATFORMS"] = "cpu"
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()


import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data dir (`<it>/tfds`) holding the offline `digits` dataset; modules may override it."""
    from lazy_jax.data.offline import prepare
    d = tmp_path_factory.mktemp("data")
    prepare("digits", str(d / "tfds"))
    return d
