"""ReLU MLP-Mixer on image classification: the paper's Mixer experiment (Li et al. 2023).

Full size (default): Mixer-B/16 with ReLU on imagenet21k at 224x224, batch 4096, AdamW lr 1e-3,
weight decay 0.03, 10k warm-up then cosine, ~300k steps (Tolstikhin et al.'s i21k recipe):
  python -m lazy_jax.main --config=configs/mixer.py --workdir=gs://BUCKET/mixer_b16
The paper finds Mixer activations sparse as in ViT, for both the token-mixing (`token_mlp`)
and channel-mixing (`channel_mlp`) MLPs.

Arguments: variant=<Mu|S|B|L>/<patch>, dataset=<tfds name>, topk=<k>, local.
Local (`configs/mixer.py:local`): Mixer-Mu/7 (128 wide, 6 layers, 16 patches) on mnist5k,
500 steps of batch 64, about 2.5 minutes on 2 CPU cores:
  python -m lazy_jax.main --config=configs/mixer.py:local --workdir=runs/mixer_mnist5k
It should reach ~93-95% test accuracy with the channel-mixing MLPs falling from ~50% to about
a quarter nonzero while the token-mixing MLPs (16 patches, d_ff 64) stay near 50% in so short a
run; README.md ("Other local runs") has the per-stack figures we measured.
"""

from lazy_jax.config_base import base_config, parse_arg
from lazy_jax.data.vision import default_config as vision_data_config
from lazy_jax.models.mixer import default_model_config


def get_config(arg=None):
    a = parse_arg(arg, dict(local=False, variant="", dataset="", topk=0))
    c = base_config()
    if a.local:
        c.model = default_model_config(a.variant or "Mu/7")
        c.data = vision_data_config(a.dataset or "mnist5k")
        c.batch_size, c.eval_batch_size = 64, 500
        c.total_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 500, 50, 250, 250
        c.optimizer.update(learning_rate=3e-3, warmup_steps=50)
    else:
        c.model = default_model_config(a.variant or "B/16")
        c.data = vision_data_config(a.dataset or "imagenet21k", image_size=224)
        c.data.eval_split = "validation" if c.data.name in ("imagenet21k", "imagenet2012") else "test"
        c.batch_size, c.eval_batch_size = 4096, 4096
        c.total_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 300_000, 100, 5000, 5000
        c.optimizer.update(learning_rate=1e-3, weight_decay=0.03, warmup_steps=10_000)
        c.model.update(dtype="bfloat16", scan_layers=False)
    c.model.topk = a.topk
    c.lock()
    return c
