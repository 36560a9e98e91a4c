#!/usr/bin/env bash
# Run one nrnp compression on this machine (CPU, or the local GPU/TPU jax sees).
#
# Usage:
#   launch/local.sh CONFIG WORKDIR [OVERRIDE...]
#   launch/local.sh default /tmp/nrnp
#   launch/local.sh configs/c10_r20.py:tiny runs/r20 predictor.hidden=160 --config.seed=1
#   NRNP_CPU_DEVICES=8 launch/local.sh default:tiny /tmp/nrnp8   # 8 simulated CPU devices
#
# Assumptions:
#   - nrnp and its dependencies are importable by $PYTHON (e.g. `pip install -e .`);
#     the repository root is also put on PYTHONPATH, so a plain checkout works.
#   - CONFIG is a config file path (`configs/c10_r20.py`, optionally `:tiny`) or a
#     bare name looked up in the repository's configs/ (`c10_r20`, `default:tiny`).
#   - WORKDIR is created if needed; rerunning with the same WORKDIR resumes the run.
#   - OVERRIDEs are `--config.x.y=v` flags; `x.y=v` is shorthand for the same.
#
# Environment read:
#   PYTHON            interpreter to use (default: python3)
#   NRNP_CPU_DEVICES  N > 0: run on CPU with N simulated devices (tests sharding on a
#                     laptop); unset or empty: use whatever devices jax finds.
# Environment set:
#   PYTHONPATH        repository root prepended
#   JAX_PLATFORMS=cpu and XLA_FLAGS+=--xla_force_host_platform_device_count=N,
#                     only when NRNP_CPU_DEVICES is set
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="$1"
workdir="$2"
shift 2

# Resolve a bare config name against the repository's configs/.
config_file="${config%%:*}"
config_arg=''
if [[ "$config" == *:* ]]; then
  config_arg=":${config#*:}"
fi
if [[ ! -f "$config_file" ]]; then
  candidate="$repo/configs/${config_file%.py}.py"
  if [[ -f "$candidate" ]]; then
    config_file="$candidate"
  else
    echo "local.sh: no config file '$config_file' (nor $candidate)" >&2
    exit 2
  fi
fi

overrides=()
for arg in "$@"; do
  if [[ "$arg" == --* ]]; then
    overrides+=("$arg")
  else
    overrides+=("--config.$arg")
  fi
done

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [[ -n "${NRNP_CPU_DEVICES:-}" ]]; then
  if ! [[ "$NRNP_CPU_DEVICES" =~ ^[1-9][0-9]*$ ]]; then
    echo "local.sh: NRNP_CPU_DEVICES must be a positive integer, got '$NRNP_CPU_DEVICES'" >&2
    exit 2
  fi
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$NRNP_CPU_DEVICES"
fi

set -x
exec "${PYTHON:-python3}" -m nrnp.main --config="$config_file$config_arg" --workdir="$workdir" \
  ${overrides[@]+"${overrides[@]}"}
