"""ReLU ViT on image classification: the paper's ViT experiments (Li et al. 2023, Sec. 2-4).

Full size (default, arg ''): ViT-B/16 with ReLU MLPs on imagenet21k at 224x224, batch 4096,
AdamW lr 1e-3, weight decay 0.03, 10k warm-up steps then cosine, 90 epochs (~300k steps),
as Dosovitskiy et al. trained ViT on ImageNet-21k; needs imagenet21k in array_record form under
$TFDS_DATA_DIR and a TPU pod slice or GPU host:
  python -m lazy_jax.main --config=configs/vit.py --workdir=gs://BUCKET/vit_b16
The paper reports ~6.3% nonzero MLP activations per token on average for ViT-B/16 (every layer
but the first at or under ~10%).

Arguments (comma-separated): variant=<Ti|S|B|L|H|Mu>/<patch>, dataset=<tfds name>, topk=<k>,
local (the offline CPU run), test (the tiny run the tests use), e.g.
configs/vit.py:variant=S/16,topk=64. Widths, depths and d_ff override the variant's by
`--config.model.width=`, `depth=`, `num_heads=`, `d_ff=`.

Local (`configs/vit.py:local`, what `launch/local.sh run` trains): ViT-Mu/7 (128 wide, 6 layers,
d_ff 512, 4 heads, 17 tokens incl. class token) on mnist5k (4000 train / 1000 test 28x28 digits),
1200 steps of batch 64, AdamW at a constant lr 2e-3 after 50 warm-up steps, a few minutes on
2 CPU cores:
  python -m lazy_jax.main --config=configs/vit.py:local --workdir=runs/vit_mnist5k
It should reach ~88% test accuracy while the mean nonzero share falls from ~50% at
initialisation to ~17% (eval every 300 steps, falling at each); the README ("The default run")
has the per-layer table we measured, docs/results.md the learning-rate study behind the choice.

Test (`configs/vit.py:test`): ViT-Mu/4 on the offline `digits` (8x8), batch 16, 6 steps, eval
and checkpoint every 3, synchronous checkpoints: seconds on a CPU; tests set data.data_dir.
"""

from lazy_jax.config_base import base_config, parse_arg
from lazy_jax.data.vision import default_config as vision_data_config
from lazy_jax.models.vit import default_model_config


def get_config(arg=None):
    a = parse_arg(arg, dict(local=False, test=False, variant="", dataset="", topk=0))
    c = base_config()
    if a.test:
        c.model = default_model_config(a.variant or "Mu/4")
        c.data = vision_data_config(a.dataset or "digits")
        c.batch_size, c.eval_batch_size = 16, 64
        c.total_steps, c.log_every_steps, c.eval_every_steps = 6, 2, 3
        c.checkpoint_every_steps = 3
        c.async_checkpointing = False
        c.optimizer.update(learning_rate=3e-3, weight_decay=1e-4, warmup_steps=50)
    elif a.local:
        c.model = default_model_config(a.variant or "Mu/7")
        c.data = vision_data_config(a.dataset or "mnist5k")
        c.batch_size, c.eval_batch_size = 64, 500
        c.total_steps, c.log_every_steps, c.eval_every_steps = 1200, 50, 300
        c.checkpoint_every_steps = 600
        # A constant learning rate: with cosine decay to 0 the share fell to ~20% and rose again to
        # ~24-30% as the rate decayed and the 4000 images were memorised (docs/results.md, default run).
        c.optimizer.update(learning_rate=2e-3, weight_decay=1e-4, warmup_steps=50, schedule="constant")
    else:
        c.model = default_model_config(a.variant or "B/16")
        c.data = vision_data_config(a.dataset or "imagenet21k", image_size=224)
        c.data.eval_split = "validation" if c.data.name in ("imagenet21k", "imagenet2012") else "test"
        c.batch_size, c.eval_batch_size = 4096, 4096
        c.total_steps, c.log_every_steps, c.eval_every_steps = 300_000, 100, 5000
        c.checkpoint_every_steps = 5000
        c.optimizer.update(learning_rate=1e-3, weight_decay=0.03, warmup_steps=10_000)
        c.model.dtype = "bfloat16"
        c.model.scan_layers = False  # unrolled layers ran 36% faster than nn.scan on an H200 (README)
    c.model.topk = a.topk
    c.lock()
    return c
