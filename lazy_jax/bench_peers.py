"""The PyTorch peers of `python -m lazy_jax.bench --peers`: the same model, shapes and optimizer in torch.

  python -m lazy_jax.bench_peers --model=vit --batch=256 --steps=20      # one JSON line per measurement

The peers a user would pick instead of lazy_jax: timm's VisionTransformer (ReLU MLPs) for a ViT
config and Hugging Face transformers' T5ForConditionalGeneration (T5 v1.0: `feed_forward_proj=
'relu'`) for a T5 config, at the sizes `lazy_jax.bench` passes (its config's). Both train with
bf16 autocast (f32 parameters, as lazy_jax's bf16 activations), fused AdamW (lr 1e-4, torch's
defaults otherwise), no dropout (timm's ViT has none by default; T5 gets dropout_rate=0.0), on
random data: images N(0, 1) with uniform labels, T5 uniform token ids in [2, vocab) as inputs and
labels (HF shifts the labels right to make the decoder input, as lazy_jax's data does). Each
measurement is eager and then `torch.compile` (default mode); each times `--steps` steps after
`--warmup` steps (the first compiles), synchronizing the GPU before reading the clock.

torch, timm and transformers are imported inside the functions that use them: lazy_jax does
not depend on them, and `lazy_jax.bench` runs this module in its own process (before JAX takes
the GPU's memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _time(step, steps: int, warmup: int) -> float:
    import torch

    for _ in range(warmup):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def _train_step(model, loss_of, *, compiled: bool, device: str):
    """One AdamW step under bf16 autocast; `loss_of(forward)` -> the scalar loss."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = loss_of(forward)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def vit_peer(args, compiled: bool) -> dict:
    """timm's VisionTransformer with ReLU MLPs at the config's sizes."""
    import timm.models.vision_transformer as tvit
    import torch
    import torch.nn as nn

    model = tvit.VisionTransformer(
        img_size=args.image_size,
        patch_size=args.patch,
        embed_dim=args.width,
        depth=args.depth,
        num_heads=args.num_heads,
        mlp_ratio=args.d_ff / args.width,
        act_layer=nn.ReLU,
        num_classes=args.num_classes,
        global_pool="token" if args.pool == "cls" else "avg",
        class_token=args.pool == "cls",
    )
    model = model.to(args.device).to(memory_format=torch.channels_last)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen).to(args.device)
    x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=gen).to(args.device)
    step = _train_step(model, lambda f: nn.functional.cross_entropy(f(x), y), compiled=compiled, device=args.device)
    dt = _time(step, args.steps, args.warmup)
    return {"peer": "timm ViT (ReLU)", "compiled": compiled, "batch": args.batch, "step_ms": 1e3 * dt}


def t5_peer(args, compiled: bool) -> dict:
    """transformers' T5ForConditionalGeneration, v1.0 (ReLU, ungated), at the config's sizes."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(
        vocab_size=args.vocab_size,
        d_model=args.width,
        d_kv=args.d_kv,
        d_ff=args.d_ff,
        num_layers=args.depth,
        num_decoder_layers=args.decoder_depth,
        num_heads=args.num_heads,
        relative_attention_num_buckets=args.num_buckets,
        relative_attention_max_distance=args.max_distance,
        feed_forward_proj="relu",
        dropout_rate=0.0,
        tie_word_embeddings=True,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = T5ForConditionalGeneration(cfg).to(args.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(2, args.vocab_size, (args.batch, args.inputs_length), generator=gen).to(args.device)
    y = torch.randint(2, args.vocab_size, (args.batch, args.targets_length), generator=gen).to(args.device)
    step = _train_step(model, lambda f: f(input_ids=x, labels=y).loss, compiled=compiled, device=args.device)
    dt = _time(step, args.steps, args.warmup)
    return {"peer": "HF transformers T5 v1.0 (ReLU)", "compiled": compiled, "batch": args.batch, "step_ms": 1e3 * dt}


PEERS = {"vit": vit_peer, "t5": t5_peer}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(PEERS), required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--modes", default="eager,compile", help="comma-separated: eager, compile")
    p.add_argument("--device", default="cuda")
    # ViT sizes (vit_peer)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--pool", default="cls")
    p.add_argument("--num_classes", type=int, default=1000)
    # Shared sizes (ViT: width, depth, heads, d_ff; T5: d_model, encoder layers, heads, d_ff)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--num_heads", type=int, default=12)
    p.add_argument("--d_ff", type=int, default=3072)
    # T5 sizes (t5_peer)
    p.add_argument("--decoder_depth", type=int, default=12)
    p.add_argument("--d_kv", type=int, default=64)
    p.add_argument("--vocab_size", type=int, default=32128)
    p.add_argument("--num_buckets", type=int, default=32)
    p.add_argument("--max_distance", type=int, default=128)
    p.add_argument("--inputs_length", type=int, default=512)
    p.add_argument("--targets_length", type=int, default=114)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(json.dumps({"torch": torch.__version__, "device": name}), flush=True)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    for mode in args.modes.split(","):
        try:
            row = PEERS[args.model](args, mode == "compile")
        except Exception as e:  # one peer failing (e.g. no compiler for torch.compile) is reported, not fatal
            row = {"peer": args.model, "compiled": mode == "compile", "error": repr(e)[:400]}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
