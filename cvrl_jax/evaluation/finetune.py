"""Semi-supervised fine-tuning: the whole network trains on a labelled fraction.

SimCLR v2 fine-tunes from the projection head's first layer
(``representation_layer=1``): encoder -> head layer 1 -> a zero-initialised linear
classifier, all trained, BatchNorm in training mode and global over the mesh.
The labelled set is ``label_fraction`` of the train split drawn class-balanced
with ``label_seed`` (listed in the workdir), or a dataset that is itself the
subset, such as ImageNet's ``imagenet2012_subset/1pct``.
"""

import ml_collections

from cvrl_jax.evaluation import classification, pretrained as pretrained_lib


class FineTune(classification.Task):
  """Every parameter of the ``Classifier`` trains; BatchNorm statistics update."""

  def init(self, rng, images):
    variables = self.net(None).init(rng, images, train=False)
    return variables["params"], variables.get("batch_stats", {}), {}

  def load(self, state, loaded):
    """The pre-trained encoder / head layers replace the random ones; the
    classifier stays as initialised (zeros)."""
    return state.replace(params={**state.params, **loaded["params"]},
                         batch_stats={**state.batch_stats, **loaded.get("batch_stats", {})})

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del rng, step
    logits, updates = self.net(axis_name).apply(
        {"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"])
    loss, metrics = classification.supervised_loss(logits, batch["label"], axis_name)
    return loss, (updates.get("batch_stats", {}), extra, metrics)

  def eval_logits(self, params, batch_stats, extra, batch):
    return self.net(None).apply({"params": params, "batch_stats": batch_stats},
                                batch["image"], train=False)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Fine-tunes ``config.pretrained`` on the labelled fraction; returns the final metrics."""
  config, mesh, pre, spec = classification.setup(config, workdir)
  indices, num_train = classification.labelled_subset(config, workdir)
  what = (f"fine-tuning of {classification.describe(config, pre)}, on {num_train} "
          "labelled images")
  return classification.run(
      config, workdir, mesh, FineTune(config, spec, total_steps=1),
      pretrained_lib.backbone_variables(pre, spec),
      classification.image_stream(config, mesh, indices),
      classification.eval_images(config, mesh), num_train, what)
