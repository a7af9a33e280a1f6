"""Tests run on the CPU with 8 fake devices, so mesh tests need no accelerator."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags += " --xla_force_host_platform_device_count=8"
# XLA's CPU collectives abort the process ("Termination timeout ... exceeded") when a fake device's
# thread reaches a rendezvous long after the others; on 2 cores shared with other jobs the suite
# aborted in eval steps ("Fatal Python error: Aborted"), which a longer timeout avoids.
# The tests that start their own processes add TERMINATE_TIMEOUT to the XLA_FLAGS they set.
TERMINATE_TIMEOUT = "--xla_cpu_collective_call_terminate_timeout_seconds=900"
if "collective_call_terminate_timeout" not in flags:
    flags += " " + TERMINATE_TIMEOUT
os.environ["XLA_FLAGS"] = flags.strip()

# Implicit rank promotion (adding a [D] to a [B, T, D] without saying so) is an error in tests,
# as in nanodo; set in the environment so the runs tests start as subprocesses get it too.
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"

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
def tfds_dir(tmp_path_factory) -> str:
    """One tfds data dir for the session (one per xdist worker); the dataset fixtures prepare into it."""
    return str(tmp_path_factory.mktemp("tfds"))


# One fixture per dataset: each prepares its dataset once and returns the data dir holding it.
@pytest.fixture(scope="session")
def digits_dir(tfds_dir) -> str:
    from lazy_jax.data import offline

    offline.prepare("digits", tfds_dir)
    return tfds_dir


@pytest.fixture(scope="session")
def mnist5k_dir(tfds_dir) -> str:
    from lazy_jax.data import offline

    offline.prepare("mnist5k", tfds_dir)
    return tfds_dir


@pytest.fixture(scope="session")
def pydocs_dir(tfds_dir) -> str:
    from lazy_jax.data import text_corpus

    text_corpus.prepare_pydocs(tfds_dir)
    return tfds_dir
