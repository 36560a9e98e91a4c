#!/bin/bash
# The measurements of docs/results.md ("Bottleneck ResNet50 and MobileNetV2"): CIFAR-10 MobileNetV2 (width 0.25)
# and bottleneck ResNet50 (width 0.125) trained here, compressed at three predictor widths, and
# 8-/4-bit PTQ of the same nets, on the JPEG CIFAR-10 in ../shared.
#
#   benchmarks/architectures.sh teachers   # trains both teachers (1,500 steps each) into $TEACHERS
#   benchmarks/architectures.sh compress   # the compressions (needs the teachers)
#   benchmarks/architectures.sh ptq        # the PTQ rows (needs the teachers)
#
# Extra flags for every compression go in $EXTRA (e.g. the BatchNorm re-estimation fields once
# they exist). Runs go to $RUNS/<net>_h<width>[_<tag>]; run two at a time on a 2-core machine.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${NRNP_SHARED:-$REPO/../shared}
DATA=$SHARED/data/cifar10-jpeg
TEACHERS=${TEACHERS:-/work/artifacts/teachers}
RUNS=${RUNS:-$REPO/runs/architectures}
NRNP="nice -n 5 $REPO/.venv/bin/python -m nrnp.main"
RECON=${RECON:-8000}
DISTILL=${DISTILL:-60}
EXTRA=${EXTRA:-}

teacher() {  # recipe steps: trains through the CLI, then keeps W/teacher (orbax) and its json
  local recipe=$1 steps=$2 work=$RUNS/teacher_$1
  XLA_FLAGS='--xla_force_host_platform_device_count=8
    --xla_cpu_collective_call_terminate_timeout_seconds=3600
    --xla_cpu_collective_call_warn_stuck_timeout_seconds=600' $NRNP --config="$recipe" --workdir="$work" \
    --config.data.image_folder="$DATA" --config.teacher.train_steps="$steps" \
    --config.teacher.train_checkpoint_every=250 --config.log_every=50 \
    --config.reconstruct.steps=1 --config.distill.steps=0
  mkdir -p "$TEACHERS"
  cp -r "$work/teacher" "$TEACHERS/$recipe" && cp "$work/teacher.json" "$TEACHERS/$recipe.json"
}

compress() {  # recipe hidden tag [flags...]
  local recipe=$1 hidden=$2 tag=$3
  shift 3
  # shellcheck disable=SC2086
  $NRNP --config="$recipe" --workdir="$RUNS/${recipe}_h${hidden}${tag}" \
    --config.teacher.checkpoint="$TEACHERS/$recipe" --config.data.image_folder="$DATA" \
    --config.predictor.hidden="$hidden" --config.reconstruct.steps="$RECON" \
    --config.distill.steps="$DISTILL" --config.log_every=500 "$@" $EXTRA
}

case ${1:-} in
  teachers)
    teacher c10_mobilenetv2 1500 &
    teacher c10_resnet50 1500
    wait ;;
  compress)
    # Predictor widths: ratios ~0.23, 0.36, 0.51 (MobileNetV2) and 0.22, 0.44, 0.71 (ResNet50).
    for pair in '96 128' '128 192' '160 256'; do
      set -- $pair
      compress c10_mobilenetv2 "$1" '' &
      compress c10_resnet50 "$2" ''
      wait
    done
    # NeRN's layout at the first width, same steps: what the grouped rows change.
    compress c10_mobilenetv2 128 _centre --config.kernels.pointwise=centre &
    compress c10_resnet50 192 _centre --config.kernels.pointwise=centre
    wait ;;
  ptq)
    for recipe in c10_mobilenetv2 c10_resnet50; do
      nice -n 5 "$REPO/.venv/bin/python" "$REPO/benchmarks/baselines.py" --recipe="$recipe" \
        --checkpoint="$TEACHERS/$recipe" --methods=original,ptq8,ptq4 \
        --out="$REPO/benchmarks/results" --name=architectures_ptq --merge
    done ;;
  *)
    echo "usage: $0 teachers|compress|ptq" >&2
    exit 2 ;;
esac
