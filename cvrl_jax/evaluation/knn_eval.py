"""kNN evaluation as a run of its own: the pre-training monitor's definition.

The same classifier as pre-training's monitor (``knn.monitor``) (weighted vote of the k most
cosine-similar train-split features, weight exp(sim / T); k=200, T=0.1 by
default) on the representation of any pre-training checkpoint, by default over
the whole train split as the bank and the whole eval split as queries.
"""

import jax
import ml_collections

from cvrl_jax import checkpoint, loop
from cvrl_jax.data import sources
from cvrl_jax.evaluation import classification, knn, pretrained as pretrained_lib


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """kNN top-1 of ``config.pretrained``; writes it to ``workdir/metrics.jsonl``."""
  config, mesh, pre, spec = classification.setup(config, workdir)
  sources.num_examples(config, config.train_split)
  checkpoint.write_config(workdir, config)
  net = pretrained_lib.build_classifier(spec, None)

  @jax.jit
  def features(variables, batch):
    return net.apply(variables, batch["image"], train=False, method="represent"), batch["label"]

  top1 = knn.monitor(config, features, pretrained_lib.backbone_variables(pre, spec),
                           mesh, spec["num_classes"])
  kc = config.knn
  writer = loop.create_writer(workdir)
  writer.write_scalars(pre.step, {"knn_top1": top1})
  writer.flush()
  line = (f"kNN of {classification.describe(config, pre)}: top-1 {top1:.2f}% on {config.dataset}:"
          f"{config.eval_split} ({kc.num_eval_examples or 'all'} queries, bank of "
          f"{kc.num_train_examples or 'all'} {config.train_split} images, k={kc.k}, "
          f"T={kc.temperature}).")
  loop.write_summary(workdir, line)
  return {"knn_top1": top1}
