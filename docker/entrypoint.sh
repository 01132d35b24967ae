#!/usr/bin/env bash
# The image's entrypoint: `train ...` and `eval ...` run train.py and eval.py with Hydra
# overrides; anything else runs as given (bash, python -c ..., the entrypoint itself again).
#
# exec, so that python replaces this shell: SLURM's and docker's signals (SIGTERM, SIGUSR1) reach
# the training process itself, which checkpoints on them, and its exit status is the container's.
set -euo pipefail

# The checkout's configs and entry points; tests point this at a working tree.
root="${VISIONATTN_ROOT:-/opt/visionattn}"

usage() {
  cat <<EOF
usage: train [override ...]              python train.py, e.g. train trainer=gpu name=r50-se
       eval ckpt_path=CKPT [override ...]  python eval.py
       COMMAND [ARG ...]                   anything else, e.g. bash
Runs land in outputs/ under the working directory, $PWD.
EOF
}

case "${1-}" in
  train | eval)
    script="$root/$1.py"
    shift
    exec python "$script" "$@"
    ;;
  -h | --help | help)
    usage
    ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    exec "$@"
    ;;
esac
