"""The configuration every evaluation run starts from (``configs/linear_eval.py`` etc.).

Data fields left empty (or 0) take the value of the run evaluated (pre-training,
or the teacher for distillation): ``dataset``, ``data_dir``, ``train_split``,
``eval_split``, ``image_size``, ``eval_crop_proportion``. Set ``dataset`` (and
``data_dir``) to evaluate on another dataset: transfer.
"""

import ml_collections


def eval_config(task: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = task
  c.pretrained = ""          # a pre-training workdir (config.json + checkpoints/)
  c.pretrained_step = -1     # -1: latest; 0: its initialisation (random-init baseline)
  c.representation_layer = 0  # 0: encoder output; 1: + the projection head's first layer

  c.dataset = ""
  c.data_dir = ""
  c.train_split = ""
  c.eval_split = ""
  c.image_size = 0
  c.eval_crop_proportion = 0.0
  c.skip_bad_images = False  # image folders: leave out files that are not whole images
  c.num_train_examples = 0   # 0: the whole split; else its first N (quick runs)
  c.num_eval_examples = 0
  c.label_fraction = 1.0     # < 1: a class-balanced fraction of the train split
  c.label_seed = 0           # which fraction: fixed, independent of ``seed``

  c.train_augment = "crop_flip"  # or "none" (centre crop; linear eval then caches features)
  c.crop_area = (0.08, 1.0)
  c.batch_size = 4096
  c.eval_batch_size = 1024
  c.num_epochs = 90.0
  c.total_steps = 0          # 0: from num_epochs
  c.seed = 0
  c.num_devices = 0
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", base_lr=0.1, lr_scaling="linear", weight_decay=0.0, momentum=0.9,
      nesterov=True, warmup_epochs=0.0, schedule="cosine", step_boundaries=(0.6, 0.8),
      trust_coefficient=0.001))

  c.log_every_steps = 100
  c.eval_every_steps = 0     # 0: evaluate at the end only
  c.checkpoint_every_steps = 5000
  c.max_to_keep = 1
  return c
