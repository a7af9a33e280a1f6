"""Training throughput of a config on synthetic data, over several meshes, side by side.

  python -m lazy_jax.bench --config=configs/vit.py --meshes=1x1x1,2x1x1,1x2x1 --per_device_batch=256

Each mesh 'DxFxM' (data x fsdp x model) uses the first D*F*M devices; the global batch is
per_device_batch x D x F. Seq2seq configs (T5) get uniform random tokens at the config's
inputs/targets lengths and also report tokens/s (encoder + decoder tokens). Synthetic inputs
skip the data pipeline, so this measures the jitted step alone: compile, 3 warm-up steps, then
`--steps` timed steps. Prints a table (and JSON with --json) of step time and examples/s, and
scaling efficiency against the first mesh. Every flag is checked before anything is compiled:
a bad value is one line `error: ...` naming it (exit 2), as in lazy_jax.main.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

from lazy_jax import sharding as shd
from lazy_jax.config_checks import define_config_flag, parse_flags
from lazy_jax.errors import InputError
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.train import Experiment

FLAGS = flags.FLAGS
define_config_flag("config", "config file, e.g. configs/vit.py")
flags.DEFINE_string("meshes", "1x1x1", "comma-separated data x fsdp x model meshes")
flags.DEFINE_integer("per_device_batch", 256, "examples per data-parallel device")
flags.DEFINE_integer("steps", 20, "timed steps")
flags.DEFINE_integer("num_classes", 1000, "classes of the synthetic labels")
flags.DEFINE_string("json", None, "write results here")
flags.mark_flag_as_required("config")


T5_VOCAB_SIZE = 32128  # T5's SentencePiece ids (32100) padded to a multiple of 128


def synthetic_data(config, n: int, rng: np.random.Generator) -> DataSpec:
    """A batch of n random examples at the config's shapes, with the sizes the model is built for."""
    if config.task == "classification":
        size = config.data.image_size or 224
        batch = {
            "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, FLAGS.num_classes, size=(n,)).astype(np.int32),
        }
        return DataSpec(example_batch=batch, num_classes=FLAGS.num_classes)
    if config.task == "seq2seq":  # uniform random tokens at the config's span-corruption lengths
        ti, tt = config.data.inputs_length, config.data.targets_length
        vocab = T5_VOCAB_SIZE if config.model.vocab_size == -1 else config.model.vocab_size
        targets = rng.integers(2, vocab, size=(n, tt)).astype(np.int32)
        batch = {
            "encoder_input_tokens": rng.integers(2, vocab, size=(n, ti)).astype(np.int32),
            "decoder_target_tokens": targets,
            "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
            "decoder_loss_weights": np.ones((n, tt), np.float32),
        }
        return DataSpec(example_batch=batch, vocab_size=vocab, padded_vocab_size=vocab)
    raise InputError(f"bench supports tasks 'classification' and 'seq2seq', not {config.task!r}")


def parse_meshes(value: str, num_devices: int) -> list[tuple[int, int, int]]:
    """--meshes 'DxFxM,...' -> [(data, fsdp, model), ...]; each a product of positive integers <= the devices."""
    meshes = []
    for mesh in value.split(","):
        parts = mesh.strip().split("x")
        if len(parts) != 3 or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
            raise InputError(
                f"--meshes={value!r}: mesh {mesh!r} is not allowed: use DATAxFSDPxMODEL with positive integers, "
                "e.g. 1x1x1 or 2x1x4, comma-separated"
            )
        d, f, m = (int(p) for p in parts)
        if d * f * m > num_devices:
            raise InputError(
                f"--meshes={value!r}: mesh {mesh!r} needs {d * f * m} devices but {num_devices} are present: "
                f"use meshes whose product is at most {num_devices}"
            )
        meshes.append((d, f, m))
    return meshes


def check_flags(num_devices: int) -> list[tuple[int, int, int]]:
    """Every flag's value, before anything is compiled; returns the meshes."""
    for name in ("per_device_batch", "steps", "num_classes"):
        value = FLAGS[name].value
        if value is None or value <= 0:
            raise InputError(f"--{name}={value} is not allowed: use a positive integer")
    if FLAGS.json is not None:
        directory = os.path.dirname(os.path.abspath(FLAGS.json))
        if os.path.isdir(FLAGS.json) or not os.path.isdir(directory):
            raise InputError(
                f"--json={FLAGS.json!r} is not allowed: use a file path in an existing directory "
                "(the results are written there at the end)"
            )
    return parse_meshes(FLAGS.meshes, num_devices)


def measure(config, mesh: tuple[int, int, int]) -> dict:
    d, f, m = mesh
    mesh_str = f"{d}x{f}x{m}"
    config = config.copy_and_resolve_references()
    config.unlock()
    config.mesh.update(data=d, fsdp=f, model=m)
    n = FLAGS.per_device_batch * d * f
    config.batch_size = n
    data = synthetic_data(config, n, np.random.default_rng(0))
    batch = data.example_batch
    exp = Experiment(config, data, devices=jax.devices()[: d * f * m])
    state = exp.init_state(0)
    with jax.set_mesh(exp.mesh):
        gbatch = shd.global_batch(batch, exp.mesh)
        t0 = time.perf_counter()
        state, metrics = exp.train_step(state, gbatch)
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - t0
        for _ in range(3):
            state, metrics = exp.train_step(state, gbatch)
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(FLAGS.steps):
            state, metrics = exp.train_step(state, gbatch)
        jax.block_until_ready(metrics)
        step_s = (time.perf_counter() - t0) / FLAGS.steps
    return {
        "mesh": mesh_str,
        "devices": d * f * m,
        "global_batch": n,
        "compile_s": round(compile_s, 1),
        "step_ms": round(1000 * step_s, 2),
        "examples_per_s": round(n / step_s, 1),
        "tokens_per_s": round(n * sum(v.shape[1] for k, v in batch.items() if k.endswith("input_tokens")) / step_s),
        "loss": float(metrics["loss"]),
        "nonzero_frac_mean": float(metrics["nonzero_frac/mean"]),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        meshes = check_flags(len(jax.devices()))
        results = [measure(FLAGS.config, m) for m in meshes]
    except InputError as e:  # as lazy_jax.main: bad input is one line, anything else keeps its traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    base = results[0]["examples_per_s"] / results[0]["devices"]
    print(
        f"{'mesh':>8} {'devices':>7} {'batch':>6} {'step ms':>8} {'examples/s':>11} {'tokens/s':>10} {'efficiency':>10}"
    )
    for r in results:
        r["scaling_efficiency"] = round(r["examples_per_s"] / (base * r["devices"]), 3)
        print(
            f"{r['mesh']:>8} {r['devices']:>7} {r['global_batch']:>6} {r['step_ms']:>8.2f} "
            f"{r['examples_per_s']:>11.1f} {r['tokens_per_s']:>10} {r['scaling_efficiency']:>10.3f}"
        )
    if FLAGS.json:
        with open(FLAGS.json, "w") as fh:
            json.dump({"device": jax.devices()[0].device_kind, "results": results}, fh, indent=2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
