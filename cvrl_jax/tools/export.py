r"""Export a pre-trained encoder for use outside cvrl_jax.

    python -m cvrl_jax.tools.export --workdir=/tmp/simclr_cpu --out=/tmp/encoder.safetensors
    python -m cvrl_jax.tools.export --workdir=/tmp/simclr_r50 --out=/tmp/resnet50.pt

(``python -m cvrl_jax.export`` runs the same tool.)

The format follows the extension of ``--out``:

* ``.npz`` / ``.safetensors``: the encoder in cvrl_jax's own layout (below), any
  encoder (ResNet of any width, with selective kernels, or ViT). Needs no torch.
* ``.pt``: a PyTorch ``state_dict`` for ``torchvision.models.resnet{18,34,50,101,152}``
  with ``fc`` replaced by ``torch.nn.Identity()`` (the encoder has no classifier); for
  a ``width_multiplier`` other than 1, the same model with every stage's channels
  scaled (``torchvision_resnet(depth, stem, width_multiplier)``, torchvision's blocks).
  ``--layout=torchvision`` writes the same names and shapes to ``.npz`` or
  ``.safetensors`` instead, without torch.

The encoder is the one ``method.features`` uses: ``params["encoder"]`` of the train
state (SimCLR's network, MoCo's query network), at the latest checkpoint or ``--step``.

cvrl_jax layout (``--layout=cvrl``)
-----------------------------------
One float32 array per name; a name is the path in the flax variable tree joined with
``/``, parameters and BatchNorm statistics side by side (their leaf names differ)::

    stem_conv/kernel                  [7, 7, 3, 64]   HWIO (torch's OIHW = transpose(3, 2, 0, 1))
    stem_bn/scale, stem_bn/bias       [64]            gamma, beta
    stem_bn/mean, stem_bn/var         [64]            running averages
    stage1_block1/conv1/kernel        [3, 3, 64, 64]
    ...
    stage4_block2/proj_conv/kernel    1x1 projection shortcuts; proj_bn/...

Module names are those of ``cvrl_jax.models.ResNet`` (see its docstring: deep stem
``stem_conv1..3`` and SK submodules ``conv2/{conv,bn,fc,fc_bn,attn}`` when
``sk_ratio > 0``). ``unflatten`` rebuilds ``{"params", "batch_stats"}`` for
``models.make_encoder(config.model).apply``. The file's metadata (safetensors' header;
the ``__metadata__`` entry of an ``.npz``) holds JSON strings: ``model`` (the
config's model section), ``method``, ``step``, ``bn_epsilon``, ``input``.

Inputs: the encoder was trained on RGB images scaled to [0, 1] with *no* mean/std
normalisation (cvrl_jax's input pipeline); feed it the same. Output: globally
average-pooled features, ``[N, C]``.

Mapping to torchvision
----------------------
``stem_conv``/``stem_bn`` -> ``conv1``/``bn1``; ``stage{s}_block{i}/conv{k}``/``bn{k}``
-> ``layer{s}.{i-1}.conv{k}``/``bn{k}``; ``proj_conv``/``proj_bn`` ->
``downsample.0``/``downsample.1``; BN ``scale, bias, mean, var`` -> ``weight, bias,
running_mean, running_var`` and ``num_batches_tracked`` = the training step. Both
libraries compute ``(x - mean) / sqrt(var + eps) * gamma + beta`` at eval, with
``eps = 1e-5`` on both sides (cvrl_jax's ResNet's, torch's default). The BN
momentum conventions differ (flax keeps ``m = 0.9`` of the old average, torch
``momentum = 0.1`` of the new batch): the same rule, which matters only if
training continues in torch. Both are ResNet v1.5 with symmetric padding,
so outputs agree to float rounding. torchvision has no width multiplier, so other
widths are built from its public ``BasicBlock`` / ``Bottleneck`` at the widths of
``models.resnet.stage_widths`` (the same module names, hence the same state dict
names); it has no selective kernels and no ResNet-200: such encoders are refused
(use ``.npz``).
CMC's ``lab_split`` encoder is refused too: its two ResNets (of half the configured
width each) take the L and the ab channels of L*a*b*, not RGB; in
the cvrl layout they are the names under ``l/`` and ``ab/``, and the RGB-to-Lab step
is ``cvrl_jax.models.lab_split`` (``make_encoder`` rebuilds the whole encoder).
CPC's encoders are refused too: their ResNet has LayerNorm (``model.norm``), and
their representation is the mean over a grid of patches (``model.patch_grid``, cut
and pooled by ``cvrl_jax.models.patches``); the cvrl layout has the ResNet's names,
and ``make_encoder`` of the metadata's ``model`` rebuilds the whole encoder.
The CIFAR stem (3x3/1 conv, no max-pool) fits after changing two modules:
``torchvision_resnet(depth, stem="cifar")`` builds that model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from cvrl_jax import checkpoint
from cvrl_jax import config as config_lib
from cvrl_jax.methods import base
from cvrl_jax.models import ResNet
from cvrl_jax.models.resnet import STAGE_SIZES, stage_widths

FORMATS = (".npz", ".safetensors", ".pt")
LAYOUTS = ("cvrl", "torchvision")
TORCHVISION_DEPTHS = (18, 34, 50, 101, 152)
INPUT_NOTE = "RGB, float in [0, 1], no mean/std normalisation; pooled features out"
_METADATA_KEY = "__metadata__"
_BN_TO_TORCH = {"scale": "weight", "bias": "bias", "mean": "running_mean",
                "var": "running_var"}


@dataclasses.dataclass
class Run:
  """What a workdir's checkpoint holds, on the host."""
  config: ml_collections.ConfigDict
  step: int
  params: Any
  batch_stats: Any


def restore_run(workdir: str, step: Optional[int] = None) -> Run:
  """The config and the params / batch_stats of checkpoint ``step`` (default: latest),
  on the host, whatever mesh wrote it."""
  config = checkpoint.read_config(workdir, "training")
  state, step = checkpoint.restore_on_host(
      workdir, checkpoint.LATEST if step is None else step, "training")
  return Run(config, step, state["params"], state.get("batch_stats", {}))


def encoder_variables(params: Any, batch_stats: Any) -> tuple[dict, dict]:
  """The encoder's (params, batch_stats): every method keeps it under ``encoder``."""
  if base.ENCODER not in params:
    raise ValueError(f"The checkpoint's params have no {base.ENCODER!r} (top level: "
                     f"{sorted(params)}); export reads methods that keep their "
                     "encoder there, as every cvrl_jax method does.")
  return dict(params[base.ENCODER]), dict(batch_stats.get(base.ENCODER, {}))


def _flat(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict) or hasattr(value, "items"):
      out.update(_flat(value, name + "/"))
    else:
      out[name] = np.ascontiguousarray(np.asarray(value))
  return out


def flatten(params: Any, batch_stats: Any) -> dict[str, np.ndarray]:
  """``{"stem_conv/kernel": array, "stem_bn/mean": array, ...}`` (the cvrl layout)."""
  flat, stats = _flat(params), _flat(batch_stats)
  clash = sorted(set(flat) & set(stats))
  if clash:
    raise ValueError(f"params and batch_stats share the names {clash}: they cannot "
                     "be stored side by side.")
  return {**flat, **stats}


def unflatten(flat: dict[str, np.ndarray]) -> dict[str, dict]:
  """``{"params": ..., "batch_stats": ...}`` for the encoder's ``apply``."""
  variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
  for name, value in flat.items():
    *path, leaf = name.split("/")
    collection = "batch_stats" if leaf in ("mean", "var") else "params"
    node = variables[collection]
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  return variables


def metadata(config: ml_collections.ConfigDict, step: int, layout: str) -> dict[str, str]:
  """String-valued metadata (safetensors' header only holds strings)."""
  model = config.model.to_dict()
  return {"format": "cvrl_jax.encoder", "layout": layout, "model": json.dumps(model),
          "method": config.method, "step": str(step),
          "bn_epsilon": str(ResNet.bn_epsilon), "input": INPUT_NOTE}


def check_torchvision_compatible(model: ml_collections.ConfigDict) -> None:
  """Raises, naming the reason and the way out, when torchvision has no such ResNet."""
  fix = " Export to .npz or .safetensors (cvrl layout) instead, which holds any encoder."
  if model.name == "lab_split":
    raise ValueError(
        "A 'lab_split' encoder (CMC) is two ResNets of half width_multiplier each, one on "
        "the L and one on the ab channels of L*a*b*: a torchvision ResNet is one network "
        f"on the 3 RGB channels, and neither half is one.{fix}")
  if model.name != "resnet":
    raise ValueError(f"A {model.name!r} encoder has no torchvision ResNet counterpart.{fix}")
  if model.depth not in TORCHVISION_DEPTHS:
    raise ValueError(f"torchvision has no ResNet-{model.depth} (it has "
                     f"{TORCHVISION_DEPTHS}).{fix}")
  if float(model.sk_ratio) > 0:
    raise ValueError(f"sk_ratio={model.sk_ratio}: torchvision has no selective-kernel "
                     f"ResNets (SimCLR v2's R50-SK and wider).{fix}")
  if model.norm != "batch":
    raise ValueError(f"norm={model.norm!r} (CPC): torchvision's ResNets have BatchNorm, and "
                     f"a LayerNorm over (H, W, C) does not map onto it.{fix}")
  if model.patch_grid[0]:
    raise ValueError(f"patch_grid={tuple(model.patch_grid)} (CPC): the representation is the "
                     "ResNet's features averaged over a grid of patches, which a torchvision "
                     f"ResNet does not compute.{fix}")
  if model.stem not in ("imagenet", "cifar"):
    raise ValueError(f"Unknown stem {model.stem!r}.")


def _torch_module(path: list[str]) -> str:
  """``["stage2_block1", "proj_bn"]`` -> ``"layer2.0.downsample.1"``."""
  stem = {"stem_conv": "conv1", "stem_bn": "bn1"}
  if len(path) == 1 and path[0] in stem:
    return stem[path[0]]
  if len(path) == 2 and path[0].startswith("stage") and "_block" in path[0]:
    stage, block = path[0][len("stage"):].split("_block")
    inner = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}.get(path[1], path[1])
    return f"layer{stage}.{int(block) - 1}.{inner}"
  raise ValueError(f"No torchvision counterpart for {'/'.join(path)}.")


def torchvision_state_dict(flat: dict[str, np.ndarray], step: int = 0,
                           bn_names: Optional[set[str]] = None) -> dict[str, np.ndarray]:
  """torchvision names and shapes (conv kernels OIHW), as numpy arrays.

  ``flat`` is the cvrl layout of a ResNet without selective kernels (check
  with ``check_torchvision_compatible`` first). ``num_batches_tracked`` = ``step``.
  """
  out = {}
  for name, value in flat.items():
    *path, leaf = name.split("/")
    module = _torch_module(path)
    if leaf == "kernel":
      out[f"{module}.weight"] = np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    elif leaf in _BN_TO_TORCH:
      out[f"{module}.{_BN_TO_TORCH[leaf]}"] = value
      out[f"{module}.num_batches_tracked"] = np.asarray(step, np.int64)
    else:
      raise ValueError(f"No torchvision counterpart for {name}.")
  return out


_TORCHVISION_SHIM = None


def import_torchvision():
  """``torchvision``, also where a CUDA build of it meets a CPU-only torch.

  PyPI's torchvision wheels link CUDA; next to torch's CPU wheel their compiled ops
  fail to load and ``import torchvision`` stops at "operator torchvision::nms does
  not exist". The classification models need none of those ops; the detection
  models need two: ``roi_align``, which torchvision computes in pure PyTorch when
  its compiled ops are missing, and ``nms``, which it does not. So the shim
  declares the schemas torchvision's import registers against, gives ``nms`` a
  pure-PyTorch kernel (``greedy_nms``), and lets ``torchvision.ops.boxes`` (whose
  functions check that the compiled library loaded before calling an op) call it.
  """
  global _TORCHVISION_SHIM
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
    return torchvision
  except RuntimeError as e:
    if "torchvision::nms" not in str(e):
      raise
  import torch  # pylint: disable=import-outside-toplevel
  for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
    del sys.modules[name]
  _TORCHVISION_SHIM = torch.library.Library("torchvision", "FRAGMENT")  # kept alive
  for op in ("nms", "qnms"):
    _TORCHVISION_SHIM.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  _TORCHVISION_SHIM.impl("nms", greedy_nms, "CompositeExplicitAutograd")
  import torchvision  # pylint: disable=import-outside-toplevel,redefined-outer-name
  # boxes.nms / batched_nms call torch.ops.torchvision.nms after this check, which
  # fails while the compiled library is missing; nms now has a kernel.
  torchvision.ops.boxes._assert_has_ops = lambda: None  # pylint: disable=protected-access
  return torchvision


def greedy_nms(boxes, scores, iou_threshold: float):
  """Non-maximum suppression as ``torchvision.ops.nms`` computes it, in PyTorch.

  Indices of the kept boxes (``[N, 4]`` as x1, y1, x2, y2) in decreasing score:
  a box is kept unless a kept box of higher score overlaps it with IoU above
  ``iou_threshold``. One IoU matrix, then a greedy pass over its rows.
  """
  import torch  # pylint: disable=import-outside-toplevel
  order = torch.argsort(scores, descending=True, stable=True)
  b = boxes[order].to(torch.float32)
  area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
  top_left = torch.maximum(b[:, None, :2], b[None, :, :2])
  bottom_right = torch.minimum(b[:, None, 2:], b[None, :, 2:])
  inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
  union = area[:, None] + area[None, :] - inter
  overlaps = (inter > iou_threshold * union).cpu().numpy()  # IoU > t, no 0/0
  keep = np.ones(len(order), bool)
  for i in range(len(order)):
    if keep[i]:
      keep[i + 1:] &= ~overlaps[i, i + 1:]
  return order[torch.from_numpy(keep).to(order.device)]


def torchvision_resnet(depth: int, stem: str = "imagenet", width_multiplier: float = 1.0):
  """``torchvision.models.resnet{depth}()`` that a ``.pt`` export loads into (strict).

  ``fc`` is ``Identity`` (the export has no classifier), so the model returns the
  pooled features; ``stem="cifar"`` swaps in a 3x3 stride-1 ``conv1`` and drops
  the max-pool, as cvrl_jax's CIFAR stem. ``width_multiplier != 1`` rebuilds the
  stem and the four stages from torchvision's blocks at cvrl_jax's widths.
  """
  import torch  # pylint: disable=import-outside-toplevel
  model_config = config_lib.model_section()
  model_config.update(depth=depth, stem=stem, width_multiplier=width_multiplier)
  check_torchvision_compatible(model_config)
  tv = import_torchvision()
  model = getattr(tv.models, f"resnet{depth}")()
  if float(width_multiplier) != 1.0:
    _scale_widths(model, depth, width_multiplier)
  if stem == "cifar":
    model.conv1 = torch.nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels,
                                  kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
  model.fc = torch.nn.Identity()
  return model


def _scale_widths(model, depth: int, width_multiplier: float) -> None:
  """Replaces ``model``'s stem and stages by the same blocks at scaled widths."""
  import torch  # pylint: disable=import-outside-toplevel
  from torchvision.models import resnet as tv_resnet  # pylint: disable=import-outside-toplevel
  sizes, bottleneck = STAGE_SIZES[depth]
  block = tv_resnet.Bottleneck if bottleneck else tv_resnet.BasicBlock
  stem_width, *widths = stage_widths(width_multiplier)
  model.conv1 = torch.nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
  model.bn1 = torch.nn.BatchNorm2d(stem_width)
  channels = stem_width
  for s, (width, blocks) in enumerate(zip(widths, sizes)):
    layer = []
    for i in range(blocks):
      stride = 2 if s > 0 and i == 0 else 1
      out = width * block.expansion
      downsample = None
      if stride != 1 or channels != out:
        downsample = torch.nn.Sequential(tv_resnet.conv1x1(channels, out, stride),
                                         torch.nn.BatchNorm2d(out))
      layer.append(block(channels, width, stride, downsample))
      channels = out
    setattr(model, f"layer{s + 1}", torch.nn.Sequential(*layer))


def save(path: str, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> None:
  """Writes ``arrays`` (and ``meta``) in the format of ``path``'s extension."""
  ext = os.path.splitext(path)[1]
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  if ext == ".npz":
    np.savez(path, **arrays, **{_METADATA_KEY: np.asarray(json.dumps(meta))})
  elif ext == ".safetensors":
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    save_file(arrays, path, metadata=meta)
  elif ext == ".pt":
    import torch  # pylint: disable=import-outside-toplevel
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, path)
  else:
    raise ValueError(f"Unknown format {ext!r} for {path}: use one of {FORMATS}.")


def load(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(arrays, metadata) of an ``.npz`` or ``.safetensors`` export."""
  ext = os.path.splitext(path)[1]
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop(_METADATA_KEY, "{}")))
    return arrays, meta
  if ext == ".safetensors":
    from safetensors import safe_open  # pylint: disable=import-outside-toplevel
    with safe_open(path, framework="np") as f:
      return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
  raise ValueError(f"load reads .npz or .safetensors, not {path}.")


def export(workdir: str, out: str, step: Optional[int] = None,
           layout: Optional[str] = None) -> Run:
  """Writes the encoder of ``workdir``'s checkpoint to ``out``; returns the run."""
  ext = os.path.splitext(out)[1]
  if ext not in FORMATS:
    raise ValueError(f"--out={out}: the extension picks the format, one of {FORMATS}.")
  layout = layout or ("torchvision" if ext == ".pt" else "cvrl")
  if layout not in LAYOUTS or (ext == ".pt" and layout != "torchvision"):
    raise ValueError(f"--layout={layout}: use one of {LAYOUTS} (.pt is always torchvision).")
  config = checkpoint.read_config(workdir, "training")
  if layout == "torchvision":
    check_torchvision_compatible(config.model)  # before the (slow) restore
  run = restore_run(workdir, step)
  flat = flatten(*encoder_variables(run.params, run.batch_stats))
  if layout == "torchvision":
    flat = torchvision_state_dict(flat, run.step)
  save(out, flat, metadata(config, run.step, layout))
  return run


def describe_model(model: ml_collections.ConfigDict) -> str:
  """``ResNet-18 x0.25 cifar-stem``, ``ViT-12x384/16``: a short name for tables."""
  if model.name == "vit":
    return f"ViT-{model.depth}x{model.width}/{model.patch_size}"
  sk = " SK" if float(model.sk_ratio) > 0 else ""
  return f"ResNet-{model.depth} x{model.width_multiplier:g}{sk} {model.stem}-stem"


def torch_usage(model: ml_collections.ConfigDict, path: str) -> str:
  """The lines that load a ``.pt`` export into torchvision."""
  width = ("" if float(model.width_multiplier) == 1.0
           else f", width_multiplier={model.width_multiplier:g}")
  return (f"from cvrl_jax.tools.export import torchvision_resnet\n"
          f"model = torchvision_resnet({model.depth}, stem={model.stem!r}{width})  "
          f"# fc = Identity{'; 3x3/1 conv1, no max-pool' if model.stem == 'cifar' else ''}\n"
          f"model.load_state_dict(torch.load({path!r}, weights_only=True))\n"
          f"model.eval()  # input: {INPUT_NOTE}")


def main(argv):
  from absl import flags, logging  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise SystemExit(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs tens of INFO lines per restore
  f = flags.FLAGS
  try:
    run = export(f.workdir, f.out, f.step, f.layout)
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"Export refused: {e}") from None
  n = sum(v.size for v in jax.tree.leaves(encoder_variables(run.params, run.batch_stats)))
  print(f"Wrote the {run.config.method} encoder ({describe_model(run.config.model)}, "
        f"{n:,} values) of step {run.step} to {f.out}.")
  if f.out.endswith(".pt"):
    print("Load it with:\n" + torch_usage(run.config.model, f.out))


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("workdir", None, "A training's workdir (config.json, checkpoints/).")
  flags.DEFINE_string("out", None, "Output file: .npz, .safetensors or .pt (torchvision).")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  flags.DEFINE_enum("layout", None, list(LAYOUTS),
                    "Names/shapes: cvrl (default for .npz/.safetensors) or torchvision.")
  flags.mark_flags_as_required(["workdir", "out"])


if __name__ == "__main__":
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)
