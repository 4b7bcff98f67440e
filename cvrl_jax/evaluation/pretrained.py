"""Encoders from pre-training workdirs, and the classifier evaluations put on them.

A pre-training workdir (any method) holds ``config.json`` and ``checkpoints/``.
``load_pretrained`` rebuilds the method from that config and restores only the
encoder and the projection head (parameters and BatchNorm statistics) of the
chosen step, directly onto the mesh; the optimiser state is never read.

Step 0 is the encoder as the pre-training run initialised it (the same seed, the
same ``method.init``), which is the randomly initialised baseline every
evaluation is compared with: ``--config.pretrained_step=0`` runs the same
protocol, through the same code, on that encoder. The pre-training run's kNN
monitor measured this very encoder at step 0.

Evaluations put a ``Classifier`` on the encoder: encoder -> the first
``representation_layer`` layers of the projection head (SimCLR v2 fine-tunes
from the first) -> a linear layer. Its parameters keep the pre-training names
(``encoder``, ``head/dense_0``, ``head/bn_0``) plus ``classifier``. Every
evaluation workdir records the network it trained in ``config.json`` under
``network``, so ``load_classifier`` can rebuild and restore it (a fine-tuned
teacher for distillation).
"""

import dataclasses
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cvrl_jax import checkpoint, methods, models, parallel
from cvrl_jax.methods import base
from cvrl_jax.models.heads import MLPHead

BACKBONE = (base.ENCODER, base.HEAD)  # the parameter groups restored from pre-training


class Classifier(nn.Module):
  """Encoder [-> head layers] -> linear classifier (zero-initialised, as SimCLR)."""
  encoder: nn.Module
  head: Optional[nn.Module]
  num_classes: int

  def setup(self):
    self.classifier = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)

  def represent(self, images: jax.Array, train: bool) -> jax.Array:
    h = self.encoder(images, train=train)
    return h if self.head is None else self.head(h, train=train)[0]

  def classify(self, features: jax.Array) -> jax.Array:
    return self.classifier(features)

  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    return self.classify(self.represent(images, train))


def network_spec(pre_config: ml_collections.ConfigDict, representation_layer: int,
                 num_classes: int, head: dict) -> dict:
  """What ``build_classifier`` needs, JSON-serialisable (saved in every eval workdir).

  ``head`` is the pre-trained ``head`` parameters: their first
  ``representation_layer`` layers are kept, with the sizes they have. Only an MLP
  head (``dense_i`` / ``bn_i``, Dense -> BN -> ReLU) has such layers; SwAV's
  prototypes head and DINO's GELU head are refused.
  """
  is_mlp = bool(head) and all(re.fullmatch(r"(dense|bn)_\d+", name) for name in head)
  layers = sum(name.startswith("dense_") for name in head) if is_mlp else 0
  if representation_layer > 0 and layers <= representation_layer:
    what = (f"an MLP head of {layers} layers" if is_mlp else
            f"a {', '.join(sorted(head)) or 'missing'} head, not an MLP")
    raise ValueError(
        f"representation_layer={representation_layer} needs a projection head of more "
        f"than {representation_layer} Dense-BN-ReLU layers; the pre-training run "
        f"(method {pre_config.method}) has {what}. Use --config.representation_layer=0 "
        "(the encoder output).")
  head_dims = [int(head[f"dense_{i}"]["kernel"].shape[-1]) for i in range(representation_layer)]
  return {"model": pre_config.model.to_dict(), "head_dims": head_dims,
          "head_bn": "bn_0" in head, "num_classes": int(num_classes)}


def build_classifier(spec: dict, axis_name: Optional[str]) -> Classifier:
  """The ``Classifier`` a ``network_spec`` describes (BN cross-replica over ``axis_name``)."""
  encoder = models.make_encoder(ml_collections.ConfigDict(spec["model"]), axis_name)
  head = (MLPHead(tuple(spec["head_dims"]), use_bn=spec["head_bn"], hidden_only=True,
                  axis_name=axis_name, bn_momentum=spec["model"]["bn_momentum"])
          if spec["head_dims"] else None)
  return Classifier(encoder, head, spec["num_classes"])


@dataclasses.dataclass
class Pretrained:
  """What an evaluation takes from a pre-training run."""
  config: ml_collections.ConfigDict  # the pre-training run's config
  step: int                          # 0: the initialisation (random encoder)
  params: dict                       # {"encoder": ..., "head": ...} (head if it has one)
  batch_stats: dict


def _abstract(tree: Any, sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def load_pretrained(workdir: str, step: int, mesh: jax.sharding.Mesh) -> Pretrained:
  """The encoder and head of the pre-training run in ``workdir`` at ``step``.

  ``step`` -1: the latest checkpoint; 0: the run's initialisation (no checkpoint
  is read); N: that step. Values come back replicated on ``mesh``.
  """
  config = checkpoint.read_config(workdir)
  # num_classes only sizes the online probe, which evaluations drop.
  method = methods.get_method(config, num_classes=1,
                              total_steps=config.total_steps or 1)
  size = config.image_size
  init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]  # as train.py

  def init(rng):
    params, batch_stats, _ = method.init(rng, jnp.zeros((2, size, size, 3), jnp.float32))
    pick = lambda tree: {k: tree[k] for k in BACKBONE if k in tree}
    return pick(params), pick(batch_stats)

  if base.ENCODER not in jax.eval_shape(init, init_rng)[0]:
    raise ValueError(f"Method {config.method!r} has no 'encoder' parameters to evaluate.")
  replicated = parallel.replicated(mesh)
  if step == 0:
    params, batch_stats = jax.jit(init, out_shardings=replicated)(init_rng)
    return Pretrained(config, 0, params, batch_stats)
  shapes = jax.eval_shape(init, init_rng)
  abstract = {"params": _abstract(shapes[0], replicated)}
  if jax.tree.leaves(shapes[1]):  # none without BatchNorm (CPC): nothing to read
    abstract["batch_stats"] = _abstract(shapes[1], replicated)
  restored, step = checkpoint.restore_subtrees(workdir, step, abstract, "pre-training")
  return Pretrained(config, step, restored["params"], restored.get("batch_stats", shapes[1]))


def backbone_variables(pretrained: Pretrained, spec: dict) -> dict:
  """The pre-trained encoder (and head layers ``spec`` keeps) as Classifier variables."""
  keep = lambda tree: {
      base.ENCODER: tree[base.ENCODER],
      **({base.HEAD: {k: v for k, v in tree[base.HEAD].items()
                      if int(k.rsplit("_", 1)[1]) < len(spec["head_dims"])}}
         if spec["head_dims"] else {})}
  variables = {"params": keep(pretrained.params)}
  if base.ENCODER in pretrained.batch_stats:  # ViTs have no BatchNorm
    variables["batch_stats"] = keep({base.HEAD: {}, **pretrained.batch_stats})
  return variables


@dataclasses.dataclass
class TrainedClassifier:
  """A classifier an evaluation run trained (a distillation teacher)."""
  spec: dict
  step: int
  variables: dict


def load_classifier(workdir: str, mesh: jax.sharding.Mesh, step: int = checkpoint.LATEST
                    ) -> TrainedClassifier:
  """The ``Classifier`` a linear-eval, fine-tuning or distillation run saved in ``workdir``."""
  config = checkpoint.read_config(workdir, "teacher (fine-tuning)")
  if "network" not in config:
    raise checkpoint.RunNotFoundError(
        f"{workdir} is not an evaluation run (its config.json has no 'network'): the "
        "teacher must be the workdir of a configs/finetune.py (or linear_eval.py, "
        "distill.py) run.")
  spec = config.network.to_dict()
  net = build_classifier(spec, None)
  size = config.image_size
  shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0),
                                           jnp.zeros((2, size, size, 3)), train=False))
  replicated = parallel.replicated(mesh)
  shapes = _abstract(shapes, replicated)
  if spec.get("frozen_backbone"):  # a linear probe: the backbone sits in ``extra``
    backbone = {"params": {k: v for k, v in shapes["params"].items() if k != "classifier"}}
    if "batch_stats" in shapes:
      backbone["batch_stats"] = shapes["batch_stats"]
    abstract = {"params": {"classifier": shapes["params"]["classifier"]}, "extra": backbone}
  else:
    abstract = {k: v for k, v in shapes.items() if k in ("params", "batch_stats")}
  restored, step = checkpoint.restore_subtrees(workdir, step, abstract, "teacher")
  if spec.get("frozen_backbone"):
    extra = restored.pop("extra")
    restored = {**extra, "params": {**extra["params"], **restored["params"]}}
  return TrainedClassifier(spec, step, restored)
