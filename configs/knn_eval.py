r"""kNN evaluation of a pre-training checkpoint, as a run of its own.

    python -m cvrl_jax.main --config=configs/knn_eval.py \
        --config.pretrained=PRETRAIN_WORKDIR --workdir=/tmp/knn

The pre-training monitor's definition (``evaluation.knn.monitor``): cosine similarity
of eval-split features to a bank of train-split features, the k=200 nearest vote
with weight exp(sim / 0.1). ``default``: the whole train split as the bank and the
whole eval split as queries. ``pretrained_step=0``: the randomly initialised
encoder. ``representation_layer=1``: the SimCLR v2 head's first layer.

``cpu``: the monitor's CPU sizes (a bank of the first 10k train images, the first
2k test images as queries), so it reproduces the pre-training run's logged
``knn_top1``:

    python -m cvrl_jax.main --config=configs/knn_eval.py:cpu \
        --config.pretrained=/tmp/simclr_cpu --config.data_dir=../shared/tfds \
        --workdir=/tmp/knn_cpu

Measured 2026-11-23 on the 2-core CPU: 38.70% for the ``simclr_v2.py:cpu`` run's
step 700 and 26.85% for its initialisation (``--config.pretrained_step=0``), the
values its monitor logged (38.7, 26.9); 20-30 s each.
"""

import ml_collections

from cvrl_jax.evaluation import config as eval_config


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  if variant not in ("default", "cpu"):
    raise ValueError(f"Unknown variant {variant!r}: use default or cpu.")
  c = eval_config.eval_config("knn")
  c.knn = ml_collections.ConfigDict(dict(
      k=200, temperature=0.1, batch_size=1024, num_train_examples=0, num_eval_examples=0))
  if variant == "cpu":
    c.knn.update(batch_size=512, num_train_examples=10_000, num_eval_examples=2_000)
  return c
