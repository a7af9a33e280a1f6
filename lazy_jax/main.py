"""Entry point: python -m lazy_jax.main --config=configs/<model>.py[:arg] --workdir=DIR [--config.k=v]

Resumes from DIR's newest checkpoint if there is one; --start_afresh moves DIR's checkpoints and
metrics aside (into DIR/set_aside/<time>/, nothing is deleted) and starts at step 0. Multi-host:
--multihost lets jax.distributed.initialize() find the coordinator (TPU VMs, SLURM); a local cluster passes
--coordinator_address, --num_processes and --process_id.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lazy_jax.errors import InputError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "ml_collections config file, e.g. configs/vit.py:local", lock_config=True
)
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl, TensorBoard events, report/")
flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() with auto-detection (TPU VM, SLURM)")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a cluster without auto-detection")
flags.DEFINE_integer("num_processes", None, "number of processes in the cluster")
flags.DEFINE_integer("process_id", None, "this process's index in the cluster")
flags.DEFINE_bool(
    "start_afresh",
    False,
    "move the workdir's checkpoints, metrics and other files of an earlier run into set_aside/<time>/ "
    "(nothing is deleted) and start at step 0",
)
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
    import jax

    if FLAGS.coordinator_address or FLAGS.num_processes:
        if FLAGS.coordinator_address is None or FLAGS.num_processes is None or FLAGS.process_id is None:
            raise InputError("a local cluster needs all of --coordinator_address, --num_processes and --process_id")
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    elif FLAGS.multihost:
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    from lazy_jax.run import train_and_evaluate

    try:
        initialize_distributed()
        # The keyword only when the flag is given: a plain run is train_and_evaluate(config, workdir).
        afresh = {"start_afresh": True} if FLAGS.start_afresh else {}
        train_and_evaluate(FLAGS.config, FLAGS.workdir, **afresh)
    # lazy_jax's own input errors (and a run stopped by a NaN) print as one line, exit 2; anything
    # else, a shape error while tracing say, keeps its traceback.
    except (InputError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (loading, compiling, the final summary), which handles
        # its own: there is no state to save.
        print("interrupted outside the training loop: no checkpoint was written by it", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
