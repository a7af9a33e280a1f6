"""T5 v1.0 (ReLU MLP) span-corruption pre-training: the paper's T5 experiments (Li et al. 2023, Sec. 2-4).

Full size (default, arg ''): T5-Base v1.0 (768 wide, 12+12 layers, d_ff 3072, 12 heads) on
c4/en span corruption at T5's shapes (noise density 0.15, mean span 3, inputs 512, targets 114),
batch 128, Adafactor (factored, parameter-scale updates, decay 0.8, update clipping 1.0, no
momentum) with T5's inverse-square-root schedule 0.01 / sqrt(max(step, 10^4)), dropout 0.1,
524,288 steps (2^19, as T5's baseline), bf16 activations with f32 parameters, unrolled layers.
Batch: 128 rows of 512 encoder tokens. pack=False is T5's own span_corruption: documents are
concatenated and cut into 568-token chunks before corruption, so nearly every row is a full
512 tokens (~65k encoder tokens per batch, T5's 2^16); packing corrupted examples into rows
(pack=True, t5x's feature converter) is supported by the model (segment masking) but adds
little here. Needs c4/en in array_record form under $TFDS_DATA_DIR and T5's SentencePiece
model (cc_all.32000/sentencepiece.model; vocabulary 32100 ids, padded to 32128):
  python -m lazy_jax.main --config=configs/t5.py --workdir=gs://BUCKET/t5_base \
    --config.data.spm_path=/path/to/sentencepiece.model
Eval (every 10k steps): loss, token accuracy and sparsity on the first 16384 documents of
C4's validation split, corrupted with a fixed seed, tokenized once per process.
The paper reports ~3.0% nonzero MLP activations per token on average for T5-Base after
training on C4 (every layer but the first at or under ~10%; larger models sparser).

Arguments (comma-separated): size=<tiny|small|base|large|3B|11B>, topk=<k> (Top-k in every MLP,
0 = dense), local (the offline CPU run), test (the tiny run the tests use), e.g.
configs/t5.py:size=small,topk=64. Dimensions override the size's by `--config.model.d_model=`,
`d_ff=`, `num_heads=`, `d_kv=`, `num_encoder_layers=`, `num_decoder_layers=`.

Local (`configs/t5.py:local`): a small T5 (128 wide, 2+2 layers, d_ff 512, 4 heads) on the
offline `pydocs` corpus (the Python standard library's documentation, ~250k words; prepared on
first use or by `python -m lazy_jax.data.prepare --dataset=pydocs`) with its 4000-piece
SentencePiece model (+100 sentinels = 4100 ids; vocab_size -1 takes it from the tokenizer,
padded to 4224), inputs 128 / targets 29 (random_spans_helper), batch 32, 500 steps, AdamW lr
1e-2 with warm-up and cosine decay, dropout 0, no packing; ~4 minutes on 2 busy CPU cores
(252 s measured there; 177 s on idle cores, at ~3.3 steps/s; compile and data preparation
included):
  python -m lazy_jax.main --config=configs/t5.py:local --workdir=runs/t5_pydocs
The loss falls from 8.8 to ~5.3 (token accuracy ~27%) and the end-of-run table shows every
layer's nonzero share falling from ~50% at initialisation: after 500 steps the decoder is at
~33% (layer 0) and ~43% (layer 1), the encoder at ~48% (mean over all layers ~43%). A run this
short shows only the start of the trend the paper reports after full training (~3% for T5-Base).

Test (`configs/t5.py:test`): the local run shrunk to 32 wide, 2+2 scanned layers, inputs 32 /
targets 9, batch 16, 6 steps, synchronous checkpoints: seconds on a CPU; tests set data.data_dir.

Randomness: dropout uses JAX's default (threefry) keys. Threefry is partitionable, so a step
gives the same dropout masks on any mesh; the faster 'rbg' / 'unsafe_rbg' implementations do not
promise that, so we keep threefry; the local run uses dropout 0, which also avoids the slow CPU
compile of the dropout masks.
"""

from lazy_jax.config_base import base_config, parse_arg
from lazy_jax.data.text import default_config as text_data_config
from lazy_jax.errors import InputError
from lazy_jax.models.t5 import default_model_config

SIZES = ("tiny", "small", "base", "large", "3B", "11B")


def get_config(arg=None):
    a = parse_arg(arg, dict(local=False, test=False, size="", topk=0))
    if a.size and a.size not in SIZES:
        raise InputError(f"config argument size={a.size!r} is unknown; allowed: {list(SIZES)}")
    c = base_config()
    c.task = "seq2seq"
    if a.local or a.test:
        c.model = default_model_config(a.size or "custom")
        if not a.size:
            c.model.update(d_model=128, num_heads=4, d_kv=32, d_ff=512, num_encoder_layers=2, num_decoder_layers=2)
        c.data = text_data_config("pydocs", inputs_length=128)
        c.batch_size, c.eval_batch_size = 32, 64
        c.total_steps, c.log_every_steps, c.eval_every_steps = 500, 50, 250
        c.checkpoint_every_steps = 250
        # lr 1e-2: at 3e-3 the loss is about the same after 600 steps but the sparsity moves less.
        c.optimizer.update(
            name="adamw",
            learning_rate=1e-2,
            weight_decay=1e-4,
            warmup_steps=100,
            schedule="warmup_cosine",
            end_lr_frac=0.1,
            grad_clip_norm=1.0,
        )
        c.model.dropout_rate = 0.0
        if a.test:  # 32 wide, 2+2 scanned layers (one body to compile per stack), 6 steps
            if not a.size:
                c.model.update(d_model=32, num_heads=4, d_kv=8, d_ff=64)
            c.model.scan_layers = True
            c.data.update(inputs_length=32, targets_length=9)  # random_spans_helper(32) -> targets 9
            c.batch_size, c.eval_batch_size = 16, 64
            c.total_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 6, 2, 3, 3
            c.async_checkpointing = False
    else:
        c.model = default_model_config(a.size or "base")
        c.data = text_data_config("c4/en", inputs_length=512)  # targets 114
        # The first 16384 of C4's 364,608 validation documents: a fixed eval set small enough to
        # be tokenized once per process and kept (the whole split would be re-read every eval).
        c.data.eval_split = "validation[:16384]"
        c.batch_size, c.eval_batch_size = 128, 128
        c.total_steps, c.log_every_steps, c.eval_every_steps = 524_288, 100, 10_000
        c.checkpoint_every_steps = 10_000
        c.optimizer.update(
            name="adafactor",
            learning_rate=0.01,
            weight_decay=0.0,
            warmup_steps=10_000,
            schedule="t5_rsqrt",
            grad_clip_norm=0.0,
        )
        c.model.dropout_rate = 0.1
        c.model.dtype = "bfloat16"
        c.model.scan_layers = False  # unrolled ran 1.44x faster than nn.scan on an H200 (README)
    c.model.vocab_size = -1  # from the tokenizer, padded to a multiple of 128 (T5: 32100 -> 32128)
    c.model.topk = a.topk
    c.lock()
    return c
