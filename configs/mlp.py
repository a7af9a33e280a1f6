"""The paper's 2-layer ReLU MLP on image classification (Li et al. 2023, the MLP experiments).

Full size (default): flatten -> Dense(d_ff=2048) -> ReLU -> Dense(classes) on cifar10
(32x32x3 = 3072 inputs), batch 128, AdamW lr 1e-3, 50k steps:
  python -m lazy_jax.main --config=configs/mlp.py --workdir=runs/mlp_cifar10
The paper finds the hidden layer's activations sparse here too, without any attention.

Arguments: d_ff=<width>, dataset=<tfds name>, topk=<k>, local.
Local (`configs/mlp.py:local`): d_ff 512 on mnist5k, 2000 steps of batch 128 at lr 3e-3, about
30 s on 2 CPU cores:
  python -m lazy_jax.main --config=configs/mlp.py:local --workdir=runs/mlp_mnist5k
It should reach ~94% test accuracy with the hidden layer's nonzero share falling from ~49% to
about 30%, train and eval alike; README.md ("Other local runs") has what we measured.
"""

from lazy_jax.config_base import base_config, parse_arg
from lazy_jax.data.vision import default_config as vision_data_config
from lazy_jax.models.mlp import default_model_config


def get_config(arg=None):
    a = parse_arg(arg, dict(local=False, d_ff=0, dataset="", topk=0))
    c = base_config()
    if a.local:
        c.model = default_model_config(a.d_ff or 512)
        c.data = vision_data_config(a.dataset or "mnist5k")
        c.total_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 2000, 100, 1000, 1000
        c.optimizer.learning_rate = 3e-3
    else:
        c.model = default_model_config(a.d_ff or 2048)
        c.data = vision_data_config(a.dataset or "cifar10")
        c.total_steps, c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 50_000, 100, 2000, 5000
    c.eval_batch_size = 500 if a.local else 1000
    c.model.topk = a.topk
    c.lock()
    return c
