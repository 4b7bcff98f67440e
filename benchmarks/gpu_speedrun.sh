#!/usr/bin/env bash
# CIFAR-10 time to accuracy on one GPU: kNN top-1 (standard protocol: whole train
# split as the bank, whole test split as queries, k=200, T=0.1) against training
# minutes, for a fixed budget per method (benchmarks/time_to_accuracy.py).
#
#   bash benchmarks/gpu_speedrun.sh DATA_DIR [OUT] [MINUTES] [-- --config.KEY=VALUE ...]
#
# DATA_DIR is a TFDS data dir holding cifar10/ (../shared is not beside the
# checkout on a lent GPU: copy ../shared/tfds/cifar10 into a git-ignored folder
# such as runs/tfds and pass runs/tfds). OUT defaults to runs/gpu_speedrun,
# MINUTES (training budget per method, start-up included) to 8. METHODS picks
# the runs (default "simclr"; "simclr moco_v2 byol" for all three), each on its
# ``cifar10`` preset (ResNet-18, CIFAR stem, batch 512) with the schedule ended
# at the budget. On a GPU the model computes in bfloat16.
#
# First, 10 steps of benchmarks.throughput on the real data say whether the
# tf.data pipeline keeps up with the device at 32 px (OUT/throughput.json:
# input images/s against training images/s). Then the curves:
# OUT/time_to_accuracy.json and .png. Arguments after -- go to every run (the
# CPU test in tests/test_benchmarks.py shrinks the model and the kNN sets so).
set -eu
cd "$(dirname "$0")/.."
data_dir=${1:?usage: bash benchmarks/gpu_speedrun.sh DATA_DIR [OUT] [MINUTES] [-- flags]}
out=${2:-runs/gpu_speedrun}
minutes=${3:-8}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
py=${PYTHON:-python3}
if [ ! -d "$data_dir/cifar10" ]; then
  echo "No cifar10/ in $data_dir: give the TFDS data dir that holds it (e.g. ../shared/tfds)." >&2
  exit 2
fi
mkdir -p "$out"
backend=$("$py" -c "import jax; print(jax.default_backend())")
dtype=$([ "$backend" = gpu ] && echo bfloat16 || echo auto)
echo "backend $backend, model dtype $dtype, $minutes min per method, out $out"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv

declare -A config=([simclr]=simclr_v2 [moco_v2]=moco_v2 [byol]=byol)
runs=()
for m in ${METHODS:-simclr}; do
  [ -n "${config[$m]:-}" ] || { echo "METHODS: unknown '$m' (simclr, moco_v2, byol)" >&2; exit 2; }
  runs+=("--run=$m=configs/${config[$m]}.py:cifar10")
done
first=${METHODS:-simclr}; first=${config[${first%% *}]}

echo "=== input pipeline vs device at 32 px ($first)"
"$py" -m benchmarks.throughput --config="configs/$first.py:cifar10" \
    --config.data_dir="$data_dir" --config.model.dtype="$dtype" --steps=10 \
    --input_batches=30 --json_out="$out/throughput.json" "$@"

echo "=== time to accuracy"
"$py" -m benchmarks.time_to_accuracy --data_dir="$data_dir" --out="$out" \
    --minutes="$minutes" --evals=4 "${runs[@]}" -- --config.model.dtype="$dtype" "$@"
