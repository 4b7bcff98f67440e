r"""Seconds to save a preset's whole train state, orbax's default way and ours.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m benchmarks.checkpoint_save --config=configs/simclr_v2.py:cpu --repeats=3

Every array of a data-parallel state is replicated on every device. Orbax's
default on CPU (and TPU) cuts each into one slice per replica and has each
replica write its slice; ``cvrl_jax.checkpoint`` registers on CPU devices the
array handler that writes each array whole from one replica instead. Each way
runs in a fresh process (a process compiles the slicing programs on its first
save, which is what every run pays), the two ways alternating ``--repeats``
times; the median of the first saves and of the later ones is printed.
Results: docs/benchmarks.md.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import orbax.checkpoint as ocp
from absl import app, flags

# --config and --json_out are throughput's (absl flags are process-wide).
from benchmarks import throughput  # noqa: F401
from cvrl_jax import checkpoint, methods, optim, parallel, step

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 3, "Processes per way, alternating.")
flags.DEFINE_integer("saves", 3, "Saves per process (the first one compiles).", lower_bound=2)
flags.DEFINE_enum("way", None, ["orbax_default", "whole"], "Internal: one process's way.")

WAYS = ("orbax_default", "whole")


def save_seconds(config, way: str, saves: int) -> dict:
  """The number of arrays of ``config``'s train state (on all devices) and the
  seconds of each of ``saves`` saves of it."""
  mesh = parallel.make_mesh()
  method = methods.get_method(config, 10, total_steps=1000)
  tx, _ = optim.create_optimizer(config, config.batch_size, 1000, 100)
  state = step.create_train_state(method, tx, jax.random.PRNGKey(0),
                                  (2, config.image_size, config.image_size, 3), mesh)
  seconds = []
  with tempfile.TemporaryDirectory() as workdir:
    mngr = checkpoint.manager(workdir, max_to_keep=1)
    if way == "orbax_default":
      ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(),
                                              override=True)
    for i in range(saves):
      start = time.perf_counter()
      mngr.save(i, args=ocp.args.StandardSave(state), force=True)
      mngr.wait_until_finished()
      seconds.append(time.perf_counter() - start)
  return {"arrays": len(jax.tree.leaves(state)), "seconds": seconds}


def main(argv):
  del argv
  if FLAGS.way:  # one process of the comparison
    print(json.dumps(save_seconds(FLAGS.config, FLAGS.way, FLAGS.saves)))
    return
  runs = {way: [] for way in WAYS}
  for _ in range(FLAGS.repeats):
    for way in WAYS:
      out = subprocess.run([sys.executable, "-m", "benchmarks.checkpoint_save", *sys.argv[1:],
                            f"--way={way}"], check=True, capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
      runs[way].append(json.loads(out.strip().splitlines()[-1]))
  result = {"devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "arrays": runs["whole"][0]["arrays"]}
  for way, outs in runs.items():
    seconds = [o["seconds"] for o in outs]
    result[way] = {"first_save_s": statistics.median(s[0] for s in seconds),
                   "later_saves_s": statistics.median(x for s in seconds for x in s[1:]),
                   "runs": seconds}
    print(f"{way}: first save {result[way]['first_save_s']:.2f} s, later saves "
          f"{result[way]['later_saves_s']:.2f} s (medians of {FLAGS.repeats} processes)")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
