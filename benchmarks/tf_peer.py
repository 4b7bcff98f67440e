r"""The CPU peer: a SimCLR step of a CIFAR ResNet in TensorFlow, and its convolutions.

    python -m benchmarks.tf_peer --batch_size=256 --json_out=tf_peer.json
    python -m benchmarks.tf_peer --depth=50 --batch_size=64
    python -m benchmarks.tf_peer --layers --steps=0

Issue 7 measures cvrl_jax's CPU speed against the official SimCLR TensorFlow code.
This puts that ratio on the machine at hand: the same step as
``benchmarks.throughput --config=configs/simclr_v2.py:cifar10 --synthetic`` (CIFAR
ResNet-18, 3-layer 512-512-128 head with BN, NT-Xent at T = 0.5 over both views,
BN statistics over both views together; ``--depth=50``: the ``cifar10_r50``
variant, ResNet-50 with a 2048-2048-128 head) written plainly in Keras and run the way
TensorFlow runs on a CPU by default: graph mode, oneDNN kernels, no XLA. Random
inputs, already in memory: the step alone. SGD with momentum instead of LARS,
which favours the peer slightly.

``--layers`` then times every distinct convolution of that ResNet-18 at
``--layer_batch`` views (the views one of main.py's 8 CPU devices gets at batch
256) three ways (forward, gradient of the input, gradient of the kernel) in
TensorFlow and in XLA, single process, to show where the difference lies. The XLA
side runs under whatever ``XLA_FLAGS`` the environment sets, e.g.
``--xla_cpu_experimental_ynn_fusion_type=`` for Eigen's convolutions instead of
YNNPACK's (docs/benchmarks.md).
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

# (input size, in channels, out channels, kernel, stride) of the CIFAR ResNet-18's
# convolutions, each with how often it occurs.
RESNET18_CIFAR_CONVS = [
    ((32, 3, 64, 3, 1), 1), ((32, 64, 64, 3, 1), 4),
    ((32, 64, 128, 3, 2), 1), ((16, 128, 128, 3, 1), 3), ((32, 64, 128, 1, 2), 1),
    ((16, 128, 256, 3, 2), 1), ((8, 256, 256, 3, 1), 3), ((16, 128, 256, 1, 2), 1),
    ((8, 256, 512, 3, 2), 1), ((4, 512, 512, 3, 1), 3), ((8, 256, 512, 1, 2), 1),
]


def resnet_cifar(depth: int = 18) -> tf.keras.Model:
  """CIFAR ResNet-18 or -50 (3x3 stem, no max-pool; v1.5 bottlenecks), globally
  average pooled: 512 or 2048 features."""
  L = tf.keras.layers

  def conv_bn(x, filters, kernel, stride, relu):
    x = L.Conv2D(filters, kernel, stride, "same", use_bias=False)(x)
    x = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return L.ReLU()(x) if relu else x

  def basic(x, filters, stride):
    return filters, conv_bn(conv_bn(x, filters, 3, stride, True), filters, 3, 1, False)

  def bottleneck(x, filters, stride):
    y = conv_bn(conv_bn(x, filters, 1, 1, True), filters, 3, stride, True)
    return 4 * filters, conv_bn(y, 4 * filters, 1, 1, False)

  blocks, block = {18: ((2, 2, 2, 2), basic), 50: ((3, 4, 6, 3), bottleneck)}[depth]
  inputs = tf.keras.Input((32, 32, 3))
  x = conv_bn(inputs, 64, 3, 1, True)
  for stage, (filters, n) in enumerate(zip([64, 128, 256, 512], blocks)):
    for i in range(n):
      stride = 2 if stage > 0 and i == 0 else 1
      out, y = block(x, filters, stride)
      if stride != 1 or x.shape[-1] != out:
        x = conv_bn(x, out, 1, stride, False)
      x = L.ReLU()(x + y)
  return tf.keras.Model(inputs, L.GlobalAveragePooling2D()(x))


def head(hidden: int) -> tf.keras.Model:
  L = tf.keras.layers
  return tf.keras.Sequential([
      L.Dense(hidden, use_bias=False), L.BatchNormalization(), L.ReLU(),
      L.Dense(hidden, use_bias=False), L.BatchNormalization(), L.ReLU(),
      L.Dense(128, use_bias=False), L.BatchNormalization(center=False)])


def nt_xent(z: tf.Tensor, temperature: float) -> tf.Tensor:
  """z holds view 1 then view 2 of the same images."""
  z = tf.math.l2_normalize(z, axis=1)
  n = tf.shape(z)[0] // 2
  logits = tf.matmul(z, z, transpose_b=True) / temperature
  logits -= 1e9 * tf.eye(2 * n)
  labels = tf.concat([tf.range(n, 2 * n), tf.range(n)], 0)
  return tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def time_step(batch_size: int, steps: int, depth: int = 18) -> dict:
  # cvrl_jax's simclr_v2.py:cifar10 / :cifar10_r50 heads: 512 / 2048 wide
  encoder, projector = resnet_cifar(depth), head(512 if depth == 18 else 2048)
  variables = encoder.trainable_variables + projector.trainable_variables
  opt = tf.keras.optimizers.SGD(0.1, momentum=0.9)
  views = tf.constant(np.random.rand(2 * batch_size, 32, 32, 3).astype(np.float32))

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = nt_xent(projector(encoder(x, training=True), training=True), 0.5)
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  for _ in range(2):
    step(views).numpy()
  start = time.perf_counter()
  for _ in range(steps):
    step(views).numpy()
  seconds = (time.perf_counter() - start) / steps
  return {"batch_size": batch_size, "step_s": seconds,
          "train_images_per_s": batch_size / seconds}


def _time_conv(size: int, cin: int, cout: int, k: int, s: int, batch: int) -> dict:
  """Seconds of forward / input-gradient / kernel-gradient of one conv, TF and XLA."""
  import jax
  from jax import lax

  from benchmarks.pointwise_conv import seconds, xla_seconds

  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, size, size, cin), np.float32)
  w = rng.standard_normal((k, k, cin, cout), np.float32) * 0.05
  g = rng.standard_normal((batch, size // s, size // s, cout), np.float32)

  def conv(x, w):
    return lax.conv_general_dilated(x, w, (s, s), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))

  xt, wt, gt = tf.constant(x), tf.constant(w), tf.constant(g)
  strides = [1, s, s, 1]
  tfs = {
      "forward": tf.function(lambda: tf.nn.conv2d(xt, wt, s, "SAME")),
      "input_grad": tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
          input_sizes=tf.shape(xt), filter=wt, out_backprop=gt, strides=strides,
          padding="SAME")),
      "kernel_grad": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
          input=xt, filter_sizes=tf.shape(wt), out_backprop=gt, strides=strides,
          padding="SAME")),
  }
  # Backprop stops at the stem: nothing needs the images' gradient.
  ops = ("forward", "kernel_grad") if cin == 3 else ("forward", "input_grad", "kernel_grad")
  xla = xla_seconds(conv, *map(jax.device_put, (x, w, g)), ops=ops)
  return {op: (xla[op], seconds(lambda f=tfs[op]: f().numpy())) for op in ops}


def time_layers(batch: int) -> list[dict]:
  """Each distinct conv of the ResNet-18: GFLOP and seconds in XLA and in TF, per op."""
  rows = []
  for (size, cin, cout, k, s), count in RESNET18_CIFAR_CONVS:
    gflop = 2 * batch * (size // s) ** 2 * cin * cout * k * k / 1e9
    for op, (t_xla, t_tf) in _time_conv(size, cin, cout, k, s, batch).items():
      rows.append({"conv": f"{size}px {cin}->{cout} {k}x{k}/{s}", "count": count,
                   "op": op, "gflop": gflop, "xla_s": t_xla, "tf_s": t_tf})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--depth", type=int, default=18, choices=[18, 50])
  parser.add_argument("--batch_size", type=int, default=256, help="images (2 views each)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps; 0 skips the step")
  parser.add_argument("--layers", action="store_true", help="also time each convolution")
  parser.add_argument("--layer_batch", type=int, default=64, help="views per layer timing")
  parser.add_argument("--json_out", default=None)
  args = parser.parse_args()

  result = {"tensorflow": tf.__version__}
  if args.steps:
    result.update(time_step(args.batch_size, args.steps, args.depth), depth=args.depth)
    print(f"TensorFlow SimCLR step, CIFAR ResNet-{args.depth}, batch {args.batch_size}: "
          f"{result['step_s']:.2f} s/step, {result['train_images_per_s']:.1f} images/s")
  if args.layers:
    rows = time_layers(args.layer_batch)
    result["layers"] = rows
    print(f"\n{'conv (x count)':28s} {'op':12s} {'XLA GF/s':>9s} {'TF GF/s':>9s} {'TF/XLA':>7s}")
    for r in rows:
      print(f"{r['conv'] + ' x' + str(r['count']):28s} {r['op']:12s} "
            f"{r['gflop'] / r['xla_s']:9.1f} {r['gflop'] / r['tf_s']:9.1f} "
            f"{r['xla_s'] / r['tf_s']:7.2f}")
    for side in ("xla_s", "tf_s"):
      result[f"{side[:-2]}_convs_s"] = sum(r[side] * r["count"] for r in rows)
    print(f"all convolutions of one fwd+bwd at {args.layer_batch} views: "
          f"XLA {result['xla_convs_s']:.2f} s, TF {result['tf_convs_s']:.2f} s")
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
