"""Entry point: python -m lazy_jax.main --config=configs/<model>.py[:arg] --workdir=DIR [--config.k=v]

Resumes from DIR's newest checkpoint if there is one; --start_afresh moves DIR's checkpoints and
metrics aside (into DIR/set_aside/<time>/, nothing is deleted) and starts at step 0. Multi-host:
--multihost lets jax.distributed.initialize() find the coordinator (TPU VMs, SLURM); a local cluster passes
--coordinator_address, --num_processes and --process_id.
"""

from __future__ import annotations

import os
import sys
import threading

from absl import app, flags, logging

from lazy_jax import xla_flags
from lazy_jax.config_checks import define_config_flag, parse_flags
from lazy_jax.errors import InputError

FLAGS = flags.FLAGS
# A missing or broken config file is one line `error: ...` (exit 2): see config_checks.parse_flags.
define_config_flag("config", "ml_collections config file, e.g. configs/vit.py:local")
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl, TensorBoard events, report/")
flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() with auto-detection (TPU VM, SLURM)")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a cluster without auto-detection")
flags.DEFINE_integer("num_processes", None, "number of processes in the cluster")
flags.DEFINE_integer("process_id", None, "this process's index in the cluster")
flags.DEFINE_integer(
    "initialization_timeout", 300, "seconds to wait for the coordinator and every process of a multi-process run"
)
flags.DEFINE_bool(
    "start_afresh",
    False,
    "move the workdir's checkpoints, metrics and other files of an earlier run into set_aside/<time>/ "
    "(nothing is deleted) and start at step 0",
)
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
    """jax.distributed.initialize for a multi-process run, saying first what it waits for and how long.

    jax aborts the process (SIGABRT, a C++ stack trace) when the cluster does not come together
    in time, so a watchdog thread ends it first with one line `error: ...` (exit 2).
    """
    if not (FLAGS.coordinator_address or FLAGS.num_processes or FLAGS.multihost):
        return
    timeout = FLAGS.initialization_timeout
    if timeout is None or timeout <= 0:
        raise InputError(f"--initialization_timeout={timeout} is not allowed: use a positive number of seconds")
    if FLAGS.coordinator_address or FLAGS.num_processes:
        address, n, p = FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        if address is None or n is None or p is None:
            raise InputError("a local cluster needs all of --coordinator_address, --num_processes and --process_id")
        host, _, port = address.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise InputError(f"--coordinator_address={address!r} is not allowed: use HOST:PORT, e.g. 10.0.0.2:1234")
        if n <= 0:
            raise InputError(f"--num_processes={n} is not allowed: use a positive integer")
        if not 0 <= p < n:
            raise InputError(f"--process_id={p} is not allowed: use 0 <= process_id < --num_processes={n}")
        who, where = f"process {p} of {n}", f"the coordinator at {address}"
        cluster = dict(coordinator_address=address, num_processes=n, process_id=p)
    else:
        who, where, cluster = "this process", "the coordinator found by auto-detection (TPU VM, SLURM)", {}
    print(f"{who}: waiting up to {timeout} s for {where} and the other processes", file=sys.stderr, flush=True)

    def expire():
        print(
            f"error: {who}: no cluster within {timeout} s (--initialization_timeout): {where} did not answer, or "
            "not every process joined; start all of them with the same --coordinator_address and "
            "--num_processes (process 0 on that host), or wait longer with --initialization_timeout",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)  # jax's own timeout would abort the process with a C++ stack trace

    import jax

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        # jax's own deadline a little later than the watchdog's, so the watchdog speaks first.
        jax.distributed.initialize(**cluster, initialization_timeout=int(timeout) + 30)
    finally:
        watchdog.cancel()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from lazy_jax.checkpoint import CheckpointSaveError
    from lazy_jax.run import train_and_evaluate

    try:
        initialize_distributed()
        # The keyword only when the flag is given: a plain run is train_and_evaluate(config, workdir).
        afresh = {"start_afresh": True} if FLAGS.start_afresh else {}
        train_and_evaluate(FLAGS.config, FLAGS.workdir, **afresh)
    # lazy_jax's own input errors, a run stopped by a NaN and a checkpoint that could not be
    # written (a full disk) print as one line, exit 2; anything else, a shape error while tracing
    # say, keeps its traceback.
    except (InputError, FloatingPointError, CheckpointSaveError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (loading, compiling, the final summary), which handles
        # its own: there is no state to save.
        print("interrupted outside the training loop: no checkpoint was written by it", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    xla_flags.apply()  # before the first computation initialises a backend
    app.run(main, flags_parser=parse_flags)
