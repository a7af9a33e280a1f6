"""Tests run on the CPU with 8 fake devices, so mesh tests need no accelerator."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()

# One persistent XLA compilation cache for the session: the many runs of the same tiny models
# (resume tests, fault tests) compile each program once. A fresh directory, so nothing carries
# over between sessions.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

_cache_dir = tempfile.mkdtemp(prefix="lazy_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache_dir)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data dir (`<it>/tfds`) holding the offline `digits` dataset; modules may override it."""
    from lazy_jax.data.offline import prepare

    d = tmp_path_factory.mktemp("data")
    prepare("digits", str(d / "tfds"))
    return d
