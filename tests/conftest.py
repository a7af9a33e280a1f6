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

# A persistent XLA compilation cache: the many runs of the same tiny models (resume tests, fault
# tests) compile each program once. One directory per pytest process (the xdist controller makes
# the root, each worker uses its own subdirectory, inherited by the runs it starts): jax writes a
# cache entry in place, not atomically, so two workers compiling the same program at once could
# read each other's half-written executable. Fresh, so nothing carries over between sessions.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if "LAZY_JAX_TEST_XLA_CACHE_ROOT" not in os.environ:
    os.environ["LAZY_JAX_TEST_XLA_CACHE_ROOT"] = tempfile.mkdtemp(prefix="lazy_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, os.environ["LAZY_JAX_TEST_XLA_CACHE_ROOT"], ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
    os.environ["LAZY_JAX_TEST_XLA_CACHE_ROOT"], os.environ.get("PYTEST_XDIST_WORKER", "main")
)
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
