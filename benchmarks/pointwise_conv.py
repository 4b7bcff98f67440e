r"""ResNet-50's 1x1 convolutions on this host: XLA's convolution against a matrix product.

    python -m benchmarks.pointwise_conv --image_size=224 --batch=8
    python -m benchmarks.pointwise_conv --image_size=32 --stem=cifar --batch=64

A bottleneck ResNet's 1x1 convolutions do half of its multiply-adds. On a CPU, XLA
runs them, forward and backward, slower than the same matrix product, so
``cvrl_jax.models.resnet.pointwise_conv`` makes them one there. This times each
distinct 1x1 conv of a ResNet-50 three ways (forward, gradient of the input,
gradient of the kernel), as ``lax.conv_general_dilated`` and as
``pointwise_conv``, single process, and sums them over the network
(docs/benchmarks.md). On another platform both columns time the same convolution.
"""

import argparse
import collections
import json
import time

import jax
import numpy as np
from jax import lax

from benchmarks import report
from cvrl_jax.models.resnet import STAGE_SIZES, pointwise_conv

DN = ("NHWC", "HWIO", "NHWC")
OPS = ("forward", "input_grad", "kernel_grad")


def resnet_pointwise_convs(depth: int, image_size: int, stem: str
                           ) -> list[tuple[tuple[int, int, int, int], int]]:
  """Distinct ``(input size, in channels, out channels, stride)`` of a bottleneck
  ResNet's 1x1 convs (v1.5: the stride sits on the 3x3), each with its count."""
  stages, bottleneck = STAGE_SIZES[depth]
  if not bottleneck:
    raise ValueError(f"ResNet-{depth} has basic blocks: its only 1x1 convs are shortcuts.")
  size = image_size // 4 if stem == "imagenet" else image_size
  cin, convs = 64, collections.Counter()
  for i, blocks in enumerate(stages):
    width, stride = 64 * 2**i, 1 if i == 0 else 2
    convs[(size, cin, 4 * width, stride)] += 1  # projection shortcut
    convs[(size, cin, width, 1)] += 1  # first block's conv1, before its strided 3x3
    size //= stride
    convs[(size, width, 4 * width, 1)] += blocks  # conv3 of every block
    convs[(size, 4 * width, width, 1)] += blocks - 1  # conv1 of the other blocks
    cin = 4 * width
  return sorted(convs.items())


def seconds(fn, reps: int = 5) -> float:
  """Seconds per call of ``fn``, which waits for its result, after one warm-up call."""
  fn()
  start = time.perf_counter()
  for _ in range(reps):
    fn()
  return (time.perf_counter() - start) / reps


def xla_seconds(conv, x: jax.Array, w: jax.Array, g: jax.Array,
                ops: tuple[str, ...] = OPS) -> dict[str, float]:
  """Seconds of ``ops`` of ``conv(x, w)``: forward, input or kernel gradient (of
  output gradient ``g``), each jitted with the arrays as arguments, so that XLA
  cannot fold the work away as constants."""
  jitted = {"forward": lambda x, w, g: conv(x, w),
            "input_grad": lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0],
            "kernel_grad": lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]}
  return {op: seconds(lambda f=jax.jit(jitted[op]): jax.block_until_ready(f(x, w, g)))
          for op in ops}


def time_conv(size: int, cin: int, cout: int, stride: int, batch: int) -> dict:
  """Seconds of forward / input gradient / kernel gradient, convolution vs matmul."""
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.standard_normal((batch, size, size, cin), np.float32))
  w = jax.device_put(rng.standard_normal((1, 1, cin, cout), np.float32) * 0.05)
  g = jax.device_put(rng.standard_normal((batch, size // stride, size // stride, cout),
                                         np.float32))
  s, pad = (stride, stride), ((0, 0), (0, 0))
  impls = {"conv": lambda x, w: lax.conv_general_dilated(x, w, s, pad, dimension_numbers=DN),
           "matmul": lambda x, w: pointwise_conv(x, w, s, pad, dimension_numbers=DN)}
  return {f"{op}_{name}_s": t for name, f in impls.items()
          for op, t in xla_seconds(f, x, w, g).items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--depth", type=int, default=50)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--stem", default="imagenet", choices=["imagenet", "cifar"])
  parser.add_argument("--batch", type=int, default=8, help="views per timing")
  parser.add_argument("--json_out", default=None)
  args = parser.parse_args()

  result = {"platform": jax.default_backend(), "jax": jax.__version__, "depth": args.depth,
            "image_size": args.image_size, "stem": args.stem, "batch": args.batch,
            "conv_s": 0.0, "matmul_s": 0.0}
  rows = []
  print(f"{'1x1 conv (x count)':28s} {'op':12s} {'conv ms':>8s} {'matmul ms':>10s} {'ratio':>6s}")
  for (size, cin, cout, stride), count in resnet_pointwise_convs(
      args.depth, args.image_size, args.stem):
    row = time_conv(size, cin, cout, stride, args.batch)
    name = f"{size}px {cin}->{cout} /{stride}"
    for op in OPS:
      conv, mm = row[f"{op}_conv_s"], row[f"{op}_matmul_s"]
      print(f"{name + ' x' + str(count):28s} {op:12s} {conv * 1e3:8.2f} {mm * 1e3:10.2f} "
            f"{conv / mm:6.2f}", flush=True)
      result["conv_s"] += count * conv
      result["matmul_s"] += count * mm
    rows.append({"conv": name, "count": count, **row})
  print()
  result["speedup"] = result["conv_s"] / result["matmul_s"]
  report.emit(result, None)
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump({**result, "convs": rows}, f, indent=2)


if __name__ == "__main__":
  main()
