#!/usr/bin/env bash
# ResNet-50 at 224 px, bfloat16, one GPU: SimCLR, MoCo v2 and BYOL steps of
# cvrl_jax (benchmarks.throughput --synthetic) and of the plain PyTorch peer
# (benchmarks.torch_peer), each pair back to back in the same session. Both time
# the training step alone: cvrl_jax without its on-device augmentation, which the
# peer does not have. A last run times cvrl_jax's SimCLR step with it
# (--config.augment.on_device=true, the ImageNet configs' default), to price the
# colour jitter, grayscale, blur and solarize on the GPU.
#
#   bash benchmarks/gpu.sh OUTDIR [BATCH]
#
# Writes OUTDIR/gpu_results.json (a list, one entry per run, merged after each run
# so a cut-off session keeps what finished) and prints every run's table. Needs
# JAX with its GPU plugin, flax, optax, ml_collections, clu, and torch/torchvision;
# TensorFlow is not needed. Each run has its own time limit (PER_RUN_S).
set -u
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu.sh OUTDIR [BATCH]}
batch=${2:-256}
per_run=${PER_RUN_S:-170}
runs=$(mktemp -d)
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"

merge() {
  python3 - "$runs" "$out" <<'PY'
import glob, json, os, sys
runs = [json.load(open(p)) | {"run": os.path.basename(p)[:-5]}
        for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.json")))]
json.dump(runs, open(os.path.join(sys.argv[2], "gpu_results.json"), "w"), indent=2)
PY
}

declare -A config=([simclr]=simclr_v2 [moco_v2]=moco_v2 [byol]=byol)
for m in simclr moco_v2 byol; do
  echo "=== cvrl_jax $m"
  timeout "$per_run" python3 -m benchmarks.throughput --config="configs/${config[$m]}.py" \
      --synthetic --steps=20 --config.batch_size="$batch" --config.model.dtype=bfloat16 \
      --config.augment.on_device=false \
      --json_out="$runs/${m}_jax.json"
  merge
  echo "=== PyTorch peer $m"
  timeout "$per_run" python3 -m benchmarks.torch_peer --method="$m" --batch_size="$batch" \
      --steps=20 --json_out="$runs/${m}_torch.json"
  merge
done
echo "=== cvrl_jax simclr with on-device augmentation"
timeout "$per_run" python3 -m benchmarks.throughput --config=configs/simclr_v2.py \
    --synthetic --steps=20 --config.batch_size="$batch" --config.model.dtype=bfloat16 \
    --config.augment.on_device=true --json_out="$runs/simclr_jax_device_augment.json"
merge
