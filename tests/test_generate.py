"""`python -m lazy_jax.generate` on a tiny trained T5 run: JSONL in and out, the sparse W_out
decoding the dense path's tokens (Pallas interpret mode and gather on the CPU), bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from test_sparse_mlp import assert_same_decoding

from lazy_jax import generate, run
from lazy_jax.config_base import load_config
from lazy_jax.errors import InputError
from lazy_jax.models.t5 import T5, t5_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory, pydocs_dir) -> Path:
    config = load_config(str(REPO / "configs/t5.py:test"))
    with config.unlocked():
        config.data.data_dir = pydocs_dir
    workdir = tmp_path_factory.mktemp("t5_run")
    run.train_and_evaluate(config, workdir)
    return workdir


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_generates_jsonl_the_same_with_sparse(t5_run, tmp_path):
    prompts = write_lines(
        tmp_path / "p.jsonl",
        [json.dumps({"text": "The list type is a mutable sequence.", "id": 1}), "", json.dumps({"input_ids": [5, 9]})],
    )
    outs = []
    for sparse, name in ((False, "dense.jsonl"), (True, "sparse.jsonl")):
        summary = generate.generate(
            workdir=str(t5_run),
            input_file=str(prompts),
            output_file=str(tmp_path / name),
            sparse=sparse,
            batch_size=2,
            max_decode_len=5,
            progress=False,
        )
        assert summary["prompts"] == 2 and summary["sparse"] == "off"  # the CPU falls back to the dense matmul
        outs.append([json.loads(line) for line in (tmp_path / name).read_text().splitlines()])
    assert outs[0] == outs[1]
    first, second = outs[0]
    assert first["id"] == 1 and second["input_ids"] == [5, 9]
    for row in outs[0]:
        assert 1 <= len(row["output_ids"]) <= 5 and isinstance(row["output_text"], str)


def test_trained_t5_sparse_decodes_the_dense_tokens(t5_run):
    loaded = generate.load_workdir(t5_run)
    config = loaded.model_config
    config.dtype = "bfloat16"
    enc = jnp.asarray(np.random.default_rng(1).integers(3, 200, (2, 16)), jnp.int32)
    assert_same_decoding(T5(t5_spec(config)), loaded.params, enc, max_len=8)


def test_bad_input_is_one_error_and_nothing_written(t5_run, tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [json.dumps({"text": "a"})])
    out = tmp_path / "out.jsonl"
    call = lambda **kw: generate.generate(**{"input_file": str(good), "output_file": str(out), "progress": False, **kw})
    with pytest.raises(InputError, match="give one of --workdir"):
        call()
    with pytest.raises(InputError, match="give one of --workdir"):
        call(workdir=str(t5_run), hf_t5=str(tmp_path))
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text((t5_run / "config.json").read_text())
    with pytest.raises(InputError, match="no checkpoints/"):
        call(workdir=str(no_ckpt))
    gated = tmp_path / "gated"
    gated.mkdir()
    (gated / "config.json").write_text(json.dumps({"model_type": "t5", "feed_forward_proj": "gated-gelu"}))
    with pytest.raises(InputError, match="gated-gelu"):
        call(hf_t5=str(gated))
    with pytest.raises(InputError, match="--sparse needs exact zeros"):
        generate.sparse_impl({"activation": "gelu", "topk": 0}, True, 1)
    assert generate.sparse_impl({"activation": "gelu", "topk": 4}, True, 1) in ("off", "pallas")
    with pytest.raises(InputError, match="empty file"):
        call(workdir=str(t5_run), input_file=str(write_lines(tmp_path / "empty.jsonl", [])))
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps({"text": "a"}), "{not json"])
    with pytest.raises(InputError, match="line 2: not JSON"):
        call(workdir=str(t5_run), input_file=str(bad))
    wrong = write_lines(tmp_path / "wrong.jsonl", [json.dumps({"prompt": "a"})])
    with pytest.raises(InputError, match="line 1: expected a JSON object with 'text'"):
        call(workdir=str(t5_run), input_file=str(wrong))
    with pytest.raises(InputError, match="more than --max_input_len=2"):
        call(
            workdir=str(t5_run),
            input_file=str(write_lines(tmp_path / "long.jsonl", ['{"input_ids": [4, 5, 6]}'])),
            max_input_len=2,
        )
    assert not out.exists()


def test_cli_prints_one_error_line(tmp_path):
    empty = write_lines(tmp_path / "empty.jsonl", [])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lazy_jax.generate",
            f"--workdir={tmp_path}/none",
            f"--input_file={empty}",
            f"--output_file={tmp_path}/o.jsonl",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.jsonl").exists()
