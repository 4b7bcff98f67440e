r"""Device memory of the compiled train step, with and without rematerialisation.

    python -m benchmarks.memory --config=configs/simclr_v2.py:cifar10 --batch_sizes=64,256

Compiles (never runs) one train step per (remat, dtype, per-device batch) on one
device and reads XLA's own accounting of the compiled program
(``compiled.memory_analysis()``): arguments (parameters, optimiser and method
state, the batch), temporaries (activations kept for the backward pass, workspace)
and the peak, arguments + outputs + temporaries - donated (aliased) buffers. No data
is read and nothing is allocated, so ImageNet-sized steps are measured on a laptop;
on a TPU the same command gives the TPU compiler's figures. Results:
docs/benchmarks.md.
"""

import json

import jax
from absl import app, flags

# --config and --json_out are throughput's (absl flags are process-wide, so the
# benchmarks share them), and so is the lowered step.
from benchmarks import throughput
from cvrl_jax import methods, optim, parallel

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["64", "256"], "Per-device batch sizes to compile.")
flags.DEFINE_list("dtypes", ["float32"], "Backbone compute dtypes: float32, bfloat16.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the online probe.")

MIB = 2**20


def step_memory(config, batch: int, num_classes: int) -> dict[str, float]:
  """XLA's memory accounting (MiB) of one train step of ``batch`` images on one device."""
  config = config.copy_and_resolve_references()
  config.batch_size = batch
  mesh = parallel.make_mesh(1)
  method = methods.get_method(config, num_classes, total_steps=1000)
  tx, _ = optim.create_optimizer(config, batch, total_steps=1000, steps_per_epoch=100)
  m = throughput.lower_step(method, tx, config, mesh, batch).compile().memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)
  return {"arguments_mib": m.argument_size_in_bytes / MIB,
          "temporaries_mib": m.temp_size_in_bytes / MIB, "peak_mib": peak / MIB}


def main(argv):
  del argv
  rows = []
  for dtype in FLAGS.dtypes:
    for batch in map(int, FLAGS.batch_sizes):
      for remat in (False, True):
        config = FLAGS.config.copy_and_resolve_references()
        config.model.update(dtype=dtype, remat=remat)
        rows.append({"dtype": dtype, "batch": batch, "remat": remat,
                     **step_memory(config, batch, FLAGS.num_classes)})
        r = rows[-1]
        print(f"{dtype:>8} batch {batch:5d} remat {str(remat):5}: arguments "
              f"{r['arguments_mib']:8.1f} MiB, temporaries {r['temporaries_mib']:8.1f} MiB, "
              f"peak {r['peak_mib']:8.1f} MiB", flush=True)
      off, on = rows[-2]["peak_mib"], rows[-1]["peak_mib"]
      print(f"{'':>8} remat saves {off - on:.1f} MiB of {off:.1f} ({100 * (off - on) / off:.0f}%)")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump({"device": jax.devices()[0].device_kind, "model": FLAGS.config.model.to_dict(),
                 "image_size": FLAGS.config.image_size, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
