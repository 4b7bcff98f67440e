#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice) from create to delete, with gcloud.
# Run `launch/tpu_vm.sh --help` for the workflow; every command takes --dry-run.
set -euo pipefail

readonly REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REMOTE_DIR="cvrl_jax"              # on every worker, under the user's home
readonly LOG="~/cvrl_jax_train.log"         # on every worker; worker 0's is streamed
readonly EXIT_FILE="~/cvrl_jax_train.exit"  # written when a run ends: its exit status
readonly POLL_S="${POLL_S:-300}"            # `watch`: seconds between state checks

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh COMMAND [options] [-- EXTRA ARGS FOR cvrl_jax.main]

Commands (in the order of a run):
  create   create the TPU VM (--queued: through a queued resource, waits for capacity)
  setup    copy this checkout to every worker and install it there (pip, jax[tpu])
  train    start training on every worker (--worker=all), logs to ~/cvrl_jax_train.log;
           re-running it resumes from the latest checkpoint in --workdir
  logs     stream worker 0's training log
  watch    keep the run going: if the VM is preempted, recreate it, set it up and
           restart training (which resumes); stops when the run has finished
  status   print the VM's state
  delete   delete the VM (and its queued resource with --queued)

Settings (flag, or environment variable):
  --name NAME          TPU_NAME        TPU VM name                        (all commands)
  --zone ZONE          TPU_ZONE        e.g. us-central2-b                 (all commands)
  --project PROJECT    TPU_PROJECT     default: gcloud's configured project
  --accelerator TYPE   TPU_ACCELERATOR e.g. v4-8, v4-32, v5litepod-16     (create, watch)
  --version VERSION    TPU_VERSION     TPU software version; default by generation
  --spot                               spot capacity (cheaper, can be preempted)
  --preemptible                        preemptible capacity (older; prefer --spot)
  --queued                             create/delete through a queued resource
  --config FILE[:VAR]  TPU_CONFIG      e.g. configs/simclr_v2.py        (train, watch)
  --workdir gs://...   TPU_WORKDIR     GCS workdir: checkpoints, metrics  (train, watch)
  --data-dir gs://...  TFDS_DATA_DIR   TFDS data dir (a bucket every worker can read)
  --dry-run            DRY_RUN=1       print the gcloud commands, run nothing

Example (a v4-32 pod slice: 4 workers, 16 chips):
  launch/tpu_vm.sh create --name ssl --zone us-central2-b --accelerator v4-32 --spot
  launch/tpu_vm.sh setup  --name ssl --zone us-central2-b
  launch/tpu_vm.sh train  --name ssl --zone us-central2-b --config configs/simclr_v2.py \
      --workdir gs://BUCKET/simclr_r50 --data-dir gs://BUCKET/tensorflow_datasets
  launch/tpu_vm.sh logs   --name ssl --zone us-central2-b
  launch/tpu_vm.sh delete --name ssl --zone us-central2-b
EOF
}

die() {
  echo "tpu_vm.sh: $*" >&2
  exit 2
}

# Single-quotes an argument unless it is plain: dry runs print copy-pastable commands.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints the command (dry run) or runs it.
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    local out=() arg
    for arg in "$@"; do out+=("$(quote "$arg")"); done
    echo "${out[*]}"
  else
    "$@"
  fi
}

require() {  # require VALUE FLAG ENV COMMAND
  [[ -n "$1" ]] || die "$4 needs $2 (or \$$3). See --help."
}

default_version() {  # the TPU VM software image for an accelerator generation
  case "$1" in
    v2-* | v3-* | v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) die "no default --version for accelerator '$1': pass --version." ;;
  esac
}

parse() {
  NAME="${TPU_NAME:-}"
  ZONE="${TPU_ZONE:-}"
  PROJECT="${TPU_PROJECT:-}"
  ACCELERATOR="${TPU_ACCELERATOR:-}"
  VERSION="${TPU_VERSION:-}"
  CONFIG="${TPU_CONFIG:-}"
  WORKDIR="${TPU_WORKDIR:-}"
  DATA_DIR="${TFDS_DATA_DIR:-}"
  CAPACITY=""
  QUEUED=0
  EXTRA=()
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --name) NAME="${2:?--name needs a value}"; shift ;;
      --zone) ZONE="${2:?--zone needs a value}"; shift ;;
      --project) PROJECT="${2:?--project needs a value}"; shift ;;
      --accelerator) ACCELERATOR="${2:?--accelerator needs a value}"; shift ;;
      --version) VERSION="${2:?--version needs a value}"; shift ;;
      --config) CONFIG="${2:?--config needs a value}"; shift ;;
      --workdir) WORKDIR="${2:?--workdir needs a value}"; shift ;;
      --data-dir) DATA_DIR="${2:?--data-dir needs a value}"; shift ;;
      --spot) CAPACITY="--spot" ;;
      --preemptible) CAPACITY="--preemptible" ;;
      --queued) QUEUED=1 ;;
      --dry-run) DRY_RUN=1 ;;
      --) shift; EXTRA=("$@"); break ;;
      *) die "unknown option '$1'. See --help." ;;
    esac
    shift
  done
  require "$NAME" --name TPU_NAME "$COMMAND"
  require "$ZONE" --zone TPU_ZONE "$COMMAND"
  WHERE=(--zone="$ZONE")
  [[ -z "$PROJECT" ]] || WHERE+=(--project="$PROJECT")
}

need_create_settings() {
  require "$ACCELERATOR" --accelerator TPU_ACCELERATOR "$COMMAND"
  VERSION="${VERSION:-$(default_version "$ACCELERATOR")}"
  if ((QUEUED)) && [[ "$CAPACITY" == "--preemptible" ]]; then
    die "queued resources take --spot, not --preemptible."
  fi
}

need_train_settings() {
  require "$CONFIG" --config TPU_CONFIG "$COMMAND"
  require "$WORKDIR" --workdir TPU_WORKDIR "$COMMAND"
  # Every worker writes its part of each checkpoint to the same directory, and a
  # preempted VM loses its disk: the workdir must be on GCS.
  [[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path (got '$WORKDIR'): \
the workers of a pod share it, and a preempted VM's own disk is lost."
  [[ -f "$REPO_ROOT/${CONFIG%%:*}" ]] || die "config file '${CONFIG%%:*}' not found in $REPO_ROOT."
}

ssh_all() {  # ssh_all COMMAND_STRING: the same command on every worker
  run gcloud compute tpus tpu-vm ssh "$NAME" "${WHERE[@]}" --worker=all --command="$1"
}

cmd_create() {
  need_create_settings
  if ((QUEUED)); then
    run gcloud compute tpus queued-resources create "$NAME" "${WHERE[@]}" --node-id="$NAME" \
      --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" ${CAPACITY:+"$CAPACITY"}
    echo "Queued; 'status' says when the VM is READY." >&2
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${WHERE[@]}" \
      --accelerator-type="$ACCELERATOR" --version="$VERSION" ${CAPACITY:+"$CAPACITY"}
  fi
}

cmd_setup() {
  local tarball jax_version
  tarball="${TMPDIR:-/tmp}/${NAME}_cvrl_jax.tar.gz"
  jax_version="$(sed -n 's/.*"jax==\([0-9.]*\)".*/\1/p' "$REPO_ROOT/setup.py")"
  [[ -n "$jax_version" ]] || die "cannot read the jax pin from setup.py."
  # The committed tree (git archive): what runs on the pod is a known commit.
  run git -C "$REPO_ROOT" archive --format=tar.gz --prefix="$REMOTE_DIR/" -o "$tarball" HEAD
  run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:cvrl_jax.tar.gz" "${WHERE[@]}" --worker=all
  ssh_all "rm -rf $REMOTE_DIR && tar xzf cvrl_jax.tar.gz && cd $REMOTE_DIR \
&& python3 -m pip install -q -e . 'jax[tpu]==$jax_version' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
}

train_command() {  # the command every worker runs; also used by `watch`
  local args
  args="--config=$CONFIG --workdir=$WORKDIR"
  [[ -z "$DATA_DIR" ]] || args+=" --config.data_dir=$DATA_DIR"
  local arg
  for arg in "${EXTRA[@]}"; do args+=" $(quote "$arg")"; done
  # nohup + background: the run outlives the ssh session. Worker 0 logs metrics.
  echo "cd $REMOTE_DIR && rm -f $EXIT_FILE && (nohup python3 -m cvrl_jax.main $args \
>> $LOG 2>&1; echo \$? > $EXIT_FILE) > /dev/null 2>&1 &"
}

cmd_train() {
  need_train_settings
  ssh_all "$(train_command)"
  echo "Started. Stream the log: launch/tpu_vm.sh logs --name $NAME --zone $ZONE" >&2
}

cmd_logs() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${WHERE[@]}" --worker=0 \
    --command="tail -n +1 -F $LOG"
}

vm_state() {
  gcloud compute tpus tpu-vm describe "$NAME" "${WHERE[@]}" --format='value(state)' \
    2>/dev/null || echo "NOT_FOUND"
}

run_status() {  # worker 0: "running", "done:STATUS" or "stopped"
  gcloud compute tpus tpu-vm ssh "$NAME" "${WHERE[@]}" --worker=0 --command="\
if pgrep -f cvrl_jax.main > /dev/null; then echo running; \
elif [ -f $EXIT_FILE ]; then echo done:\$(cat $EXIT_FILE); else echo stopped; fi" \
    2>/dev/null | tail -n 1
}

cmd_delete() {
  if ((QUEUED)); then
    run gcloud compute tpus queued-resources delete "$NAME" "${WHERE[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${WHERE[@]}" --quiet
  fi
}

recreate() {
  echo "$(date -u +%FT%TZ) VM $NAME is $1: recreating it; training resumes from the \
latest checkpoint in $WORKDIR." >&2
  if ((QUEUED)) || [[ "$1" != NOT_FOUND ]]; then  # a queued resource outlives its VM
    cmd_delete || true
  fi
  cmd_create
  if ((QUEUED)) && [[ "${DRY_RUN:-0}" != 1 ]]; then
    until [[ "$(vm_state)" == READY ]]; do sleep 60; done
  fi
  cmd_setup
  cmd_train
}

cmd_watch() {
  need_create_settings
  need_train_settings
  if [[ "${DRY_RUN:-0}" == 1 ]]; then  # one round: what a preemption would trigger
    echo "# every ${POLL_S}s: gcloud compute tpus tpu-vm describe $NAME ${WHERE[*]}" \
      "--format='value(state)'; when PREEMPTED, TERMINATED or gone:"
    recreate PREEMPTED
    return
  fi
  local state status
  while true; do
    state="$(vm_state)"
    case "$state" in
      PREEMPTED | TERMINATED | NOT_FOUND) recreate "$state" ;;
      READY)
        status="$(run_status)"
        case "$status" in
          done:0) echo "Run finished; the VM is left running (delete it)." >&2; return 0 ;;
          done:*) die "the run failed (exit ${status#done:}); see: launch/tpu_vm.sh logs" ;;
          stopped) cmd_train ;;  # e.g. a worker restarted under us: resume
        esac ;;
    esac
    sleep "$POLL_S"
  done
}

cmd_status() {
  run gcloud compute tpus tpu-vm describe "$NAME" "${WHERE[@]}" \
    --format='value(state,acceleratorType,health)'
}

main() {
  (($#)) || { usage >&2; exit 2; }
  COMMAND="$1"
  shift
  case "$COMMAND" in
    -h | --help) usage ;;
    create | setup | train | logs | watch | status | delete)
      parse "$@"
      "cmd_$COMMAND" ;;
    *) die "unknown command '$COMMAND'. See --help." ;;
  esac
}

main "$@"
