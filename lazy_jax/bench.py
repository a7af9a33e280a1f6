"""Training throughput of a config on synthetic data, over several meshes, side by side.

  python -m lazy_jax.bench --config=configs/vit.py --meshes=1x1x1,2x1x1,1x2x1 --per_device_batch=256

Each mesh 'DxFxM' (data x fsdp x model) uses the first D*F*M devices; the global batch is
per_device_batch x D x F. Seq2seq configs (T5) get uniform random tokens at the config's
inputs/targets lengths and also report tokens/s (encoder + decoder tokens). Synthetic inputs
skip the data pipeline, so this measures the jitted step alone: compile, 3 warm-up steps, then
`--steps` timed steps. Prints a table (and JSON with --json) of step time and examples/s, and
scaling efficiency against the first mesh. Every flag is checked before anything is compiled:
a bad value is one line `error: ...` naming it (exit 2), as in lazy_jax.main.

  python -m lazy_jax.bench --config=configs/vit.py --peers --json=vit.json

`--peers` (one device, mesh 1x1x1) first runs the PyTorch peers of the config's model in their
own process (`lazy_jax.bench_peers`: timm's ViT or transformers' T5, eager and torch.compile, at
the same sizes and batch), then ours, at equal settings: bf16 activations as the config has
them, AdamW without gradient clipping (the peers' fused AdamW clips nothing) and dropout 0 (the
peers run without dropout; the full T5 config's is 0.1, so ours is set to 0 and the table says
so). It prints one table of step time, examples/s, tokens/s, TFLOP/s, MFU and ours / peer.
Model FLOPs are counted once, by `lazy_jax.flops.forward_flops` (a multiply-add is 2 FLOPs)
times 3 for a training step (forward + backward), the same count for every implementation;
MFU divides by `--peak_tflops` (989: the H200's dense bf16 datasheet rate).

`--attention=auto|xla|cudnn`, `--relpos=onehot|gather`, `--attention_logits=float32|activation`
`--attention_pad=stream|layer` and `--attention_qkv=split|fused`
change `lazy_jax.models.attention.SETTINGS` (how attention is computed); `--nostats` measures a
build whose per-layer statistics are constants (what returning them costs). `--profile_dir=DIR`
traces 3 steps after the timed ones into DIR/<mesh> (`python -m lazy_jax.profiling DIR --steps=3`
sums them by kernel).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags

from lazy_jax import flops, profiling, sparsity, xla_flags
from lazy_jax import sharding as shd
from lazy_jax.config_checks import define_config_flag, parse_flags
from lazy_jax.errors import InputError
from lazy_jax.input_pipeline import DataSpec
from lazy_jax.models import attention, model_spec
from lazy_jax.train import Experiment

FLAGS = flags.FLAGS
PROFILED_STEPS = 3
define_config_flag("config", "config file, e.g. configs/vit.py")
flags.DEFINE_string("meshes", "1x1x1", "comma-separated data x fsdp x model meshes")
flags.DEFINE_integer("per_device_batch", 256, "examples per data-parallel device")
flags.DEFINE_integer("steps", 20, "timed steps")
flags.DEFINE_integer("num_classes", 1000, "classes of the synthetic labels")
flags.DEFINE_string("json", None, "write results here")
flags.DEFINE_bool("peers", False, "also run the PyTorch peers (lazy_jax.bench_peers) at equal settings")
flags.DEFINE_float("peak_tflops", 989.0, "the device's dense bf16 peak, for MFU (H200: 989)")
flags.DEFINE_bool("stats", True, "return the per-layer statistics (--nostats: constants, to measure their cost)")
flags.DEFINE_string("attention", None, "attention impl: auto, xla or cudnn (default: the models')")
flags.DEFINE_string("relpos", None, "T5 relative bias: onehot or gather (default: the models')")
flags.DEFINE_string("profile_dir", None, "after timing, trace 3 more steps here (lazy_jax.profiling summarises it)")
flags.DEFINE_string("attention_logits", None, "T5 attention logits: float32 or activation (default: the models')")
flags.DEFINE_string("attention_pad", None, "ViT's odd length for cuDNN: stream or layer (default: the models')")
flags.DEFINE_string("attention_qkv", None, "vision q/k/v projections: split or fused (default: the models')")
flags.mark_flag_as_required("config")
# command-line flag -> the attention.SETTINGS key it sets
ATTENTION_FLAGS = {
    "attention": "impl",
    "relpos": "relpos",
    "attention_logits": "logits",
    "attention_pad": "pad",
    "attention_qkv": "qkv",
}


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


def check_flags(num_devices: int | None) -> list[tuple[int, int, int]]:
    """Every flag's value, before anything is compiled; returns the meshes.

    num_devices None: not yet asked (--peers runs the peers before JAX takes the GPU), so only
    the mesh 1x1x1 that --peers needs is allowed.
    """
    for name in ("per_device_batch", "steps", "num_classes"):
        value = FLAGS[name].value
        if value is None or value <= 0:
            raise InputError(f"--{name}={value} is not allowed: use a positive integer")
    if not FLAGS.peak_tflops > 0:
        raise InputError(f"--peak_tflops={FLAGS.peak_tflops} is not allowed: use a positive number (TFLOP/s)")
    for flag, key in ATTENTION_FLAGS.items():
        value = FLAGS[flag].value
        if value is not None and value not in attention.ATTENTION_CHOICES[key]:
            raise InputError(f"--{flag}={value!r} is not allowed; allowed: {list(attention.ATTENTION_CHOICES[key])}")
    if FLAGS.peers:
        if FLAGS.meshes.replace(" ", "") != "1x1x1":
            raise InputError(
                f"--meshes={FLAGS.meshes!r} is not allowed with --peers: the peers run on one device, use 1x1x1"
            )
        if FLAGS.config.task not in PEER_OF_TASK:
            raise InputError(f"--peers is not allowed for task {FLAGS.config.task!r}: use a ViT or T5 config")
        peer = PEER_OF_TASK[FLAGS.config.task]
        if FLAGS.config.model.name != peer:
            raise InputError(f"--peers is not allowed for model {FLAGS.config.model.name!r}: use a ViT or T5 config")
        missing = [m for m in ("torch", PEER_LIBRARY[peer]) if importlib.util.find_spec(m) is None]
        if missing:
            raise InputError(
                f"--peers needs {' and '.join(missing)} in this Python ({sys.executable}): install it or drop --peers"
            )
    if FLAGS.json is not None:
        directory = os.path.dirname(os.path.abspath(FLAGS.json))
        if os.path.isdir(FLAGS.json) or not os.path.isdir(directory):
            raise InputError(
                f"--json={FLAGS.json!r} is not allowed: use a file path in an existing directory "
                "(the results are written there at the end)"
            )
    if num_devices is None:
        return [(1, 1, 1)]
    return parse_meshes(FLAGS.meshes, num_devices)


PEER_OF_TASK = {"classification": "vit", "seq2seq": "t5"}  # the model each task's peer is
PEER_LIBRARY = {"vit": "timm", "t5": "transformers"}


def equal_settings(config) -> list[str]:
    """Sets the config as the peers run (--peers) and returns what changed, to be printed."""
    changes = []
    want = {
        ("model", "dropout_rate"): 0.0,  # the peers run without dropout
        ("optimizer", "name"): "adamw",  # the peers' fused AdamW
        ("optimizer", "grad_clip_norm"): 0.0,  # the peers clip nothing
        ("optimizer", "weight_decay"): 0.01,  # torch's AdamW default
    }
    for (group, key), value in want.items():
        if config[group][key] != value:
            changes.append(f"{group}.{key}: {config[group][key]!r} -> {value!r}")
            config[group][key] = value
    return changes


def _image_size(config) -> int:
    return config.data.image_size or 224


def model_flops(config) -> tuple[float, dict]:
    """(training FLOPs per example = 3 x forward, by lazy_jax.flops; the peer's size arguments)."""
    m = config.model
    if config.task == "classification":
        size = _image_size(config)
        spec = model_spec(m, num_classes=FLAGS.num_classes, image_shape=(size, size, 3))
        forward = flops.per_example(flops.forward_flops(spec, image_shape=(size, size, 3)))
        sizes = dict(
            image_size=size, patch=spec.patch, pool=spec.pool, num_classes=spec.num_classes, width=spec.width,
            depth=spec.depth, num_heads=spec.num_heads, d_ff=spec.d_ff,
        )  # fmt: skip
    else:
        vocab = T5_VOCAB_SIZE if m.vocab_size == -1 else m.vocab_size
        ti, tt = config.data.inputs_length, config.data.targets_length
        spec = model_spec(m, vocab_size=vocab)
        forward = flops.per_example(flops.forward_flops(spec, inputs_length=ti, targets_length=tt))
        sizes = dict(
            width=spec.d_model, depth=spec.num_encoder_layers, decoder_depth=spec.num_decoder_layers,
            num_heads=spec.num_heads, d_ff=spec.d_ff, d_kv=spec.d_kv, vocab_size=vocab,
            num_buckets=spec.num_buckets, max_distance=spec.max_distance, inputs_length=ti, targets_length=tt,
        )  # fmt: skip
    return 3.0 * forward, sizes


def run_peers(config, batch: int, sizes: dict) -> list[dict]:
    """The peers of the config's model, in their own process (JAX has not taken the GPU yet)."""
    peer = PEER_OF_TASK[config.task]
    args = [f"--model={peer}", f"--batch={batch}", f"--steps={FLAGS.steps}", "--warmup=3"]
    args += [f"--{k}={v}" for k, v in sizes.items()]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "lazy_jax.bench_peers", *args], capture_output=True, text=True, env=env, check=False
    )
    rows, versions = [], {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            if "peer" in row:
                rows.append(row)
            elif "torch" in row:  # the peers' first line: torch's version and the device
                versions = {"torch": row["torch"], "torch_device": row.get("device")}
    for row in rows:
        row.update(versions)
    if proc.returncode != 0 or not rows:
        rows.append({"peer": peer, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"})
    return rows


def _constant_stats(a_BTF, mask_BT, **unused):
    """What MlpBlock gets instead of its statistics under --nostats."""
    del a_BTF, mask_BT, unused
    zero = jax.numpy.zeros((), jax.numpy.float32)
    return {"nonzero_frac": zero, "num_tokens": zero}


def measure(config, mesh: tuple[int, int, int]) -> dict:
    real_stats = sparsity.activation_stats
    if not FLAGS.stats:
        sparsity.activation_stats = _constant_stats
    try:
        result = _measure(config, mesh)
    finally:
        sparsity.activation_stats = real_stats
    if not FLAGS.stats and result["nonzero_frac_mean"] != 0.0:
        raise RuntimeError("--nostats did not take: the model computed its statistics elsewhere")
    return result


def _measure(config, mesh: tuple[int, int, int]) -> dict:
    d, f, m = mesh
    mesh_str = f"{d}x{f}x{m}"
    config = config.copy_and_resolve_references()
    config.unlock()
    config.mesh.update(data=d, fsdp=f, model=m)
    if FLAGS.peers:
        equal_settings(config)
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
        if FLAGS.profile_dir:
            with profiling.trace(os.path.join(FLAGS.profile_dir, mesh_str)):
                for _ in range(PROFILED_STEPS):
                    state, metrics = exp.train_step(state, gbatch)
                jax.block_until_ready(metrics)
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


def peer_table(config, ours: dict, peers: list[dict], train_flops: float, changes: list[str]) -> list[dict]:
    """Prints ours against the peers with MFU; returns the rows."""
    tokens = ours["tokens_per_s"] / ours["examples_per_s"] if ours["tokens_per_s"] else 0
    n = ours["global_batch"]
    name = config.model.get("variant") or config.model.get("size")
    print(
        f"\n{config.model.name} {name}, batch {n}, {config.model.dtype} activations; model FLOPs "
        f"{train_flops / 1e9:.1f} GFLOP per example per training step (3 x forward, lazy_jax.flops); "
        f"MFU against {FLAGS.peak_tflops:g} TFLOP/s"
    )
    print("ours at the peers' settings: " + ("; ".join(changes) if changes else "the config's own"))
    rows = [{"implementation": "lazy_jax (JAX)", "step_ms": ours["step_ms"]}]
    for p in peers:
        label = f"{p['peer']}{' + torch.compile' if p.get('compiled') else ' eager'}"
        rows.append({"implementation": label, "step_ms": round(p["step_ms"], 2)} if "step_ms" in p else
                    {"implementation": label, "error": p.get("error", "?")})  # fmt: skip
    print(
        f"{'implementation':<46} {'step ms':>8} {'examples/s':>10} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'ours/this':>9}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['implementation']:<46} error: {r['error']}")
            continue
        eps = n / (r["step_ms"] / 1e3)
        r.update(
            examples_per_s=round(eps, 1),
            tokens_per_s=round(eps * tokens),
            tflops=round(eps * train_flops / 1e12, 1),
            mfu=round(eps * train_flops / 1e12 / FLAGS.peak_tflops, 4),
            ours_over_this=round(r["step_ms"] / ours["step_ms"], 3),
        )
        print(
            f"{r['implementation']:<46} {r['step_ms']:>8.2f} {eps:>10.1f} {r['tokens_per_s']:>10} "
            f"{r['tflops']:>8.1f} {100 * r['mfu']:>5.1f}% {r['ours_over_this']:>9.3f}"
        )
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    peers, peer_rows, changes, train_flops = [], [], [], None
    try:
        if FLAGS.peers:  # the peers first, in their own process, before JAX takes the GPU's memory
            meshes = check_flags(None)
            config = FLAGS.config.copy_and_resolve_references()
            config.unlock()
            changes = equal_settings(config)
            train_flops, sizes = model_flops(config)
            peers = run_peers(config, FLAGS.per_device_batch, sizes)
        else:
            meshes = check_flags(len(jax.devices()))
        choices = {key: FLAGS[flag].value for flag, key in ATTENTION_FLAGS.items()}
        attention.set_attention(**{k: v for k, v in choices.items() if v is not None})
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
    if FLAGS.peers:
        peer_rows = peer_table(FLAGS.config, results[0], peers, train_flops, changes)
    if FLAGS.json:
        out = {
            "device": jax.devices()[0].device_kind,
            "attention": dataclasses.asdict(attention.SETTINGS),
            "stats": FLAGS.stats,
            "results": results,
        }
        if FLAGS.peers:
            out.update(
                settings_changed=changes, train_flops_per_example=train_flops, peak_tflops=FLAGS.peak_tflops,
                peers=peers, table=peer_rows,
            )  # fmt: skip
        with open(FLAGS.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    xla_flags.apply()  # before the first computation initialises a backend
    app.run(main, flags_parser=parse_flags)
