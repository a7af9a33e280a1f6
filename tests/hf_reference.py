"""Hugging Face PyTorch T5 reference for the parity test, in its own Python environment.

torch and transformers are test-only and the project's Python (3.12) has no small CPU torch
wheel, so the reference runs in a separate virtualenv `.venv-hf` (Python 3.11, CPU torch,
transformers) that this file creates and caches. Two roles:

  python tests/hf_reference.py --setup      # any Python: create/update .venv-hf, print its python
  .venv-hf/bin/python tests/hf_reference.py --out DIR
      # build small random T5ForConditionalGeneration models (T5 v1.0 ReLU, tied embeddings),
      # write per case DIR/<case>.npz (state dict, inputs, encoder states, logits, bucket tables),
      # DIR/<case>_safetensors/ (save_pretrained), DIR/<case>_bin/ (pytorch_model.bin) and
      # DIR/<case>_bin_sharded/ (two .bin shards and pytorch_model.bin.index.json).
  .venv-hf/bin/python tests/hf_reference.py --torch-load FILE --torch-load-kwargs JSON --out NPZ
      # torch.load(FILE, **kwargs) -> NPZ: `torch_load` runs it for the test process, which has no
      # torch, so that lazy_jax's own .bin reader is tested with the real torch.load.

Environment variables: LAZY_JAX_HF_PYTHON = a Python that already has torch + transformers
(skips the virtualenv); LAZY_JAX_HF_BASE_PYTHON = the Python 3.11 to build .venv-hf from;
LAZY_JAX_HF_PIP_ARGS = extra pip arguments (e.g. an index with CPU torch wheels); CI (set to
true by CI, and by .ci/run): the reference is required, so no Python 3.11 to build it from fails
`--setup` and the parity tests instead of skipping them.
This file imports only the standard library at the top: the test process imports it too.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, ".venv-hf")
# torch 2.13.0 resolves to the CPU build where a local wheel is on pip's find-links.
REQUIREMENTS = ("torch==2.13.0", "transformers==5.18.0", "numpy>=1.26")
STAMP = "lazy_jax_requirements.txt"
BASE_VERSION = (3, 11)


class HfEnvUnavailable(RuntimeError):
    """No base Python to build the reference environment from (the parity test skips, saying so,
    unless `reference_required()`)."""


def reference_required() -> bool:
    """On CI (CI=true, as CI services set it) the PyTorch reference must run: a green run must
    include the parity check, so a missing reference environment is an error there, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return tuple(map(int, out.stdout.split())) if out.returncode == 0 else None


def find_base_python() -> str:
    """A Python 3.11 interpreter: $LAZY_JAX_HF_BASE_PYTHON, PATH, pyenv, common prefixes."""
    if os.environ.get("LAZY_JAX_HF_BASE_PYTHON"):
        return os.environ["LAZY_JAX_HF_BASE_PYTHON"]
    major, minor = BASE_VERSION
    name = f"python{major}.{minor}"
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [
        shutil.which(name),
        *sorted(glob.glob(f"{pyenv}/versions/{major}.{minor}*/bin/python3")),
        f"/usr/local/bin/{name}",
        f"/usr/bin/{name}",
        *sorted(glob.glob(f"/opt/*/bin/{name}")),
    ]
    for c in candidates:
        if c and _python_version(c) == BASE_VERSION:
            return c
    raise HfEnvUnavailable(
        f"no {name} found (PATH, {pyenv}/versions, /usr/local/bin, /usr/bin, /opt/*/bin); "
        f"the PyTorch reference needs one: install it (e.g. 'pyenv install 3.11') "
        "or set LAZY_JAX_HF_BASE_PYTHON / LAZY_JAX_HF_PYTHON"
    )


@contextlib.contextmanager
def _lock():
    import fcntl

    with open(os.path.join(tempfile.gettempdir(), "lazy_jax_venv_hf.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_hf_python(log=print) -> str:
    """-> a Python with the pinned torch + transformers, creating/updating .venv-hf if needed."""
    if os.environ.get("LAZY_JAX_HF_PYTHON"):
        return os.environ["LAZY_JAX_HF_PYTHON"]
    python = os.path.join(VENV, "bin", "python")
    stamp = os.path.join(VENV, STAMP)
    wanted = "\n".join(REQUIREMENTS) + "\n"
    with _lock():
        if os.path.isfile(stamp) and open(stamp).read() == wanted and os.access(python, os.X_OK):
            return python
        start = time.time()
        if not os.access(python, os.X_OK):
            base = find_base_python()
            log(f"== making {VENV} with {base}")
            subprocess.run([base, "-m", "venv", VENV], check=True)
            with open(os.path.join(VENV, ".gitignore"), "w") as f:
                f.write("# created by tests/hf_reference.py\n*\n")  # as Python >= 3.13's venv does
        log(f"== installing {' '.join(REQUIREMENTS)} into {VENV}")
        extra = shlex.split(os.environ.get("LAZY_JAX_HF_PIP_ARGS", ""))
        proc = subprocess.run(
            [python, "-m", "pip", "install", "-q", *extra, *REQUIREMENTS], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"pip install {' '.join(REQUIREMENTS)} into {VENV} failed:\n{proc.stdout}\n{proc.stderr}"
            )
        with open(stamp, "w") as f:
            f.write(wanted)
        log(f"== {VENV} ready in {time.time() - start:.0f} s")
    return python


def run_reference(out_dir: str, timeout: float = 600) -> None:
    """Runs this file's reference computation in the HF environment, writing into out_dir."""
    python = ensure_hf_python(log=lambda msg: print(msg, file=sys.stderr))
    proc = subprocess.run(
        [python, os.path.abspath(__file__), "--out", out_dir], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"HF reference failed ({python}; if its environment is broken, delete {VENV} "
            f"to rebuild it):\n{proc.stdout}\n{proc.stderr}"
        )


def torch_load(path: str, **kwargs):
    """`torch.load(path, **kwargs)` run in the HF environment -> {name: float32 numpy array}.

    The parity test installs this as `torch.load` in its own process (which has no torch) to test
    lazy_jax's .bin reader with the real torch.load and the arguments that reader passes."""
    import numpy as np

    python = ensure_hf_python(log=lambda msg: print(msg, file=sys.stderr))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "state.npz")
        argv = [python, os.path.abspath(__file__), "--torch-load", path, "--torch-load-kwargs", json.dumps(kwargs)]
        proc = subprocess.run([*argv, "--out", out], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"torch.load({path!r}, **{kwargs}) failed in {python}:\n{proc.stdout}\n{proc.stderr}")
        with np.load(out) as z:
            return {k: z[k] for k in z.files}


def write_torch_load(path: str, kwargs_json: str, out: str) -> None:
    import numpy as np
    import torch

    state = torch.load(path, **json.loads(kwargs_json))
    np.savez(out, **{k: v.detach().float().numpy() for k, v in state.items()})


# ----------------------------------------------------------------------------- the reference
# Small T5 v1.0 configs. 'long': the default 32 buckets / max distance 128 with sequences longer
# than 128; 'short_distance': few buckets and a small max distance, asymmetric depths.
CASES = {
    "long": dict(
        config=dict(
            vocab_size=97,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_heads=4,
            num_layers=2,
            num_decoder_layers=3,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
        ),
        batch=2,
        enc_len=150,
        dec_len=140,
        enc_valid=(150, 131),
        dec_valid=(140, 100),
    ),
    "short_distance": dict(
        config=dict(
            vocab_size=61,
            d_model=24,
            d_kv=6,
            d_ff=48,
            num_heads=3,
            num_layers=3,
            num_decoder_layers=2,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=12,
        ),
        batch=3,
        enc_len=30,
        dec_len=25,
        enc_valid=(30, 17, 5),
        dec_valid=(25, 9, 20),
    ),
}
BUCKET_RANGE = 300  # bucket tables for relative positions -300..300


def _tokens(rng, vocab: int, length: int, valid: tuple[int, ...]):
    import numpy as np

    toks = rng.integers(2, vocab, size=(len(valid), length)).astype(np.int64)
    for row, n in enumerate(valid):
        toks[row, n:] = 0
    return toks


def write_reference(out_dir: str) -> None:
    import numpy as np
    import torch
    import transformers
    from transformers import T5Config, T5ForConditionalGeneration
    from transformers.models.t5.modeling_t5 import T5Attention

    torch.manual_seed(0)
    os.makedirs(out_dir, exist_ok=True)
    for case_id, (name, case) in enumerate(CASES.items()):
        torch.manual_seed(case_id)
        rng = np.random.default_rng(case_id)
        config = T5Config(
            **case["config"],
            feed_forward_proj="relu",
            tie_word_embeddings=True,
            dropout_rate=0.1,
            attn_implementation="eager",
        )
        model = T5ForConditionalGeneration(config).eval()
        enc = _tokens(rng, config.vocab_size, case["enc_len"], case["enc_valid"])
        tgt = _tokens(rng, config.vocab_size, case["dec_len"], case["dec_valid"])
        dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)  # BOS = 0, shifted right
        enc_mask, dec_mask = (enc > 0).astype(np.int64), (tgt > 0).astype(np.int64)
        with torch.no_grad():
            encoder_hidden = model.get_encoder()(
                input_ids=torch.from_numpy(enc), attention_mask=torch.from_numpy(enc_mask)
            ).last_hidden_state
            logits = model(
                input_ids=torch.from_numpy(enc),
                attention_mask=torch.from_numpy(enc_mask),
                decoder_input_ids=torch.from_numpy(dec_in),
                decoder_attention_mask=torch.from_numpy(dec_mask),
            ).logits
        rel = torch.arange(-BUCKET_RANGE, BUCKET_RANGE + 1)
        buckets = {
            f"buckets_{kind}": T5Attention._relative_position_bucket(
                rel,
                bidirectional=kind == "bidirectional",
                num_buckets=config.relative_attention_num_buckets,
                max_distance=config.relative_attention_max_distance,
            ).numpy()
            for kind in ("bidirectional", "causal")
        }
        state = {f"state/{k}": v.detach().float().numpy() for k, v in model.state_dict().items()}
        np.savez(
            os.path.join(out_dir, f"{name}.npz"),
            **state,
            **buckets,
            config_json=np.array(config.to_json_string()),
            relative_positions=rel.numpy(),
            encoder_input_tokens=enc.astype(np.int32),
            decoder_input_tokens=dec_in.astype(np.int32),
            decoder_target_tokens=tgt.astype(np.int32),
            encoder_hidden=encoder_hidden.float().numpy(),
            logits=logits.float().numpy(),
            versions=np.array(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__})),
        )
        model.save_pretrained(os.path.join(out_dir, f"{name}_safetensors"))
        bin_dir = os.path.join(out_dir, f"{name}_bin")
        os.makedirs(bin_dir, exist_ok=True)
        config.to_json_file(os.path.join(bin_dir, "config.json"))
        torch.save(model.state_dict(), os.path.join(bin_dir, "pytorch_model.bin"))
        # The same weights in two shards with an index, as save_pretrained writes large models.
        sharded_dir = os.path.join(out_dir, f"{name}_bin_sharded")
        os.makedirs(sharded_dir, exist_ok=True)
        config.to_json_file(os.path.join(sharded_dir, "config.json"))
        names = list(model.state_dict())
        weight_map = {}
        for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
            shard = f"pytorch_model-{i + 1:05d}-of-00002.bin"
            torch.save({k: model.state_dict()[k] for k in part}, os.path.join(sharded_dir, shard))
            weight_map.update(dict.fromkeys(part, shard))
        with open(os.path.join(sharded_dir, "pytorch_model.bin.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--setup", action="store_true", help="create/update .venv-hf and print its python")
    group.add_argument("--out", help="write the reference outputs into this directory (run in the HF env)")
    parser.add_argument("--torch-load", help="with --out NPZ: write this torch file's tensors there (in the HF env)")
    parser.add_argument("--torch-load-kwargs", default="{}", help="keyword arguments of torch.load, as JSON")
    args = parser.parse_args()
    if args.setup:
        try:
            python = ensure_hf_python(log=lambda msg: print(msg, file=sys.stderr))
        except HfEnvUnavailable as e:
            if reference_required():
                print(
                    f"error: CI is set, so the T5 parity tests must run, but their PyTorch reference cannot: {e}",
                    file=sys.stderr,
                )
                sys.exit(1)
            print(f"warning: the T5 parity tests will be skipped: {e}", file=sys.stderr)
            return
        print(python)
    elif args.torch_load:
        write_torch_load(args.torch_load, args.torch_load_kwargs, args.out)
    else:
        write_reference(args.out)


if __name__ == "__main__":
    main()
