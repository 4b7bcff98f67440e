r"""Images/s at a fixed per-device batch on 1..N devices, and the global loss's share.

    python -m benchmarks.scaling --config=configs/simclr_v2.py:cpu \
        --config.data_dir=../shared/tfds --per_device_batch=16 --devices=1,2,4,8

For each device count a fresh process (the count of simulated CPU devices is
fixed when JAX starts) times the train step with ``batch_size = per_device_batch
* N``, and separately the global NT-Xent alone (``all_gather`` of the projections
plus the loss and its gradient) on the same shapes, so its share of the step is
measured rather than guessed. On simulated CPU devices the cores are shared, so
per-device images/s falls with N by construction; the total and the share are
what carry over to real devices.
"""

import json
import os
import subprocess
import sys

if __name__ == "__main__" and "--child_devices" in " ".join(sys.argv):
  _n = [a.split("=")[1] for a in sys.argv if a.startswith("--child_devices=")][0]
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={_n}"

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from benchmarks import throughput  # noqa: E402
from cvrl_jax import losses, parallel  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("per_device_batch", 16, "Images per device.")
flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Device counts to measure.")
flags.DEFINE_integer("child_devices", 0, "Internal: measure this count in this process.")


def global_loss_seconds(per_device: int, dim: int, steps: int) -> float:
  """Seconds per call of NT-Xent + its gradient over the global batch of the mesh."""
  mesh = parallel.make_mesh(None)

  def loss(z1, z2):
    local = losses.nt_xent(z1, z2, temperature=0.1, axis_name=parallel.DATA)
    return jax.lax.pmean(local, parallel.DATA)

  fn = jax.jit(jax.shard_map(jax.value_and_grad(loss, argnums=(0, 1)), mesh=mesh,
                             in_specs=(P(parallel.DATA), P(parallel.DATA)),
                             out_specs=(P(), (P(parallel.DATA), P(parallel.DATA)))))
  shape = (per_device * mesh.devices.size, dim)
  z = [jax.device_put(jax.random.normal(jax.random.PRNGKey(i), shape),
                      NamedSharding(mesh, P(parallel.DATA))) for i in (0, 1)]
  jax.block_until_ready(fn(*z))
  return throughput.timed(lambda: fn(*z), steps)


def child() -> dict:
  config = FLAGS.config
  n = jax.device_count()
  config.batch_size = FLAGS.per_device_batch * n
  r = throughput.train_throughput(config, FLAGS.steps)
  dim = config.head.output_dim if "head" in config else 128
  loss_s = global_loss_seconds(FLAGS.per_device_batch, dim, FLAGS.steps)
  return {"devices": n, "batch_size": config.batch_size,
          "images_per_s": r["train_images_per_s"],
          "images_per_s_per_device": r["train_images_per_s"] / n,
          "device_step_s": r["device_step_s"], "global_loss_s": loss_s,
          "global_loss_share": loss_s / r["device_step_s"]}


def main(argv):
  del argv
  if FLAGS.child_devices:
    print("RESULT " + json.dumps(child()))
    return
  rows = []
  for n in FLAGS.devices:
    args = [a for a in sys.argv[1:] if not a.startswith(("--json_out", "--devices"))]
    out = subprocess.run([sys.executable, "-m", "benchmarks.scaling", *args,
                          f"--child_devices={n}"], capture_output=True, text=True,
                         check=False, cwd=os.getcwd())
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
      raise RuntimeError(f"The {n}-device run failed:\n{out.stderr[-3000:]}")
    rows.append(json.loads(lines[-1][len("RESULT "):]))
  keys = list(rows[0])
  print(" | ".join(keys))
  for r in rows:
    print(" | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
