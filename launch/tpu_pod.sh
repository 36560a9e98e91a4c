#!/usr/bin/env bash
# Install nrnp on every worker of an existing Cloud TPU VM (single host or pod slice)
# and run the same compression command on all of them at once.
#
# Usage:
#   TPU_NAME=my-v4-32 ZONE=us-central2-b PROJECT=my-project \
#   NRNP_GIT=https://github.com/OWNER/nrnp.git NRNP_BRANCH=main \
#   WORKDIR=/mnt/shared/runs/r56 CONFIG=configs/c100.py \
#     launch/tpu_pod.sh [--config.x.y=v ...]
#
# Assumptions:
#   - The TPU VM already exists (this script creates and deletes nothing) and
#     `gcloud` on this machine is authenticated for PROJECT.
#   - Every worker can reach NRNP_GIT and PyPI, has python3 with venv, git, and bash
#     as the login shell (the remote script is passed through `bash -c`).
#   - WORKDIR is one directory every worker sees: an NFS/Filestore mount, or a
#     `gs://bucket/path` URL, which is mounted with gcsfuse (must be installed on the
#     workers) at /mnt/gcs/<bucket> because nrnp writes its workdir with plain file I/O.
#   - Data and teacher checkpoints named in the config/overrides are readable on
#     every worker (same shared path).
#   - nrnp's main calls jax.distributed.initialize() when it runs as one of several
#     processes; on Cloud TPU VMs jax detects the pod topology by itself, so no
#     coordinator address is passed here. One process runs per worker (host).
#
# Environment read (here):
#   TPU_NAME, ZONE, PROJECT   the TPU VM (required)
#   NRNP_GIT      git URL of nrnp (default: the placeholder below; set it)
#   NRNP_BRANCH   branch, tag or commit to check out (default: main)
#   CONFIG        config file inside the repository, may end in :tiny
#                 (default: configs/default.py)
#   WORKDIR       shared run directory (required)
#   NRNP_VENV     venv path on the workers (default: ~/nrnp-venv)
#   NRNP_SKIP_INSTALL=1   reuse the existing checkout and venv on the workers
# Environment set (on the workers): none besides what the venv activation implies;
#   the repository checkout lives in ~/nrnp.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE, e.g. us-central2-b}"
: "${PROJECT:?set PROJECT to the GCP project id}"
: "${WORKDIR:?set WORKDIR to a directory shared by all workers (NFS path or gs://...)}"
git_url="${NRNP_GIT:-https://github.com/OWNER/nrnp.git}"
branch="${NRNP_BRANCH:-main}"
config="${CONFIG:-configs/default.py}"
venv="${NRNP_VENV:-\$HOME/nrnp-venv}"
skip_install="${NRNP_SKIP_INSTALL:-0}"

if [[ "$git_url" == *OWNER* ]]; then
  echo "tpu_pod.sh: set NRNP_GIT to the repository URL (placeholder $git_url)" >&2
  exit 2
fi

q() { printf '%q' "$1"; }

overrides=''
for arg in "$@"; do
  overrides+=" $(q "$arg")"
done

workdir_setup="workdir=$(q "$WORKDIR")"
if [[ "$WORKDIR" == gs://* ]]; then
  path="${WORKDIR#gs://}"
  bucket="${path%%/*}"
  rest="${path#"$bucket"}"
  workdir_setup="command -v gcsfuse >/dev/null || { echo 'gcsfuse is not installed' >&2; exit 1; }
sudo mkdir -p /mnt/gcs/$(q "$bucket") && sudo chown \"\$USER\" /mnt/gcs/$(q "$bucket")
mountpoint -q /mnt/gcs/$(q "$bucket") || gcsfuse --implicit-dirs $(q "$bucket") /mnt/gcs/$(q "$bucket")
workdir=/mnt/gcs/$(q "$bucket")$(q "$rest")"
fi

install="
if [ -d \"\$HOME/nrnp/.git\" ]; then
  git -C \"\$HOME/nrnp\" fetch --quiet origin $(q "$branch")
  git -C \"\$HOME/nrnp\" checkout --quiet --force FETCH_HEAD
else
  git clone --quiet $(q "$git_url") \"\$HOME/nrnp\"
  git -C \"\$HOME/nrnp\" checkout --quiet $(q "$branch")
fi
python3 -m venv $venv
$venv/bin/pip install --quiet --upgrade pip
$venv/bin/pip install --quiet -e \"\$HOME/nrnp\" 'jax[tpu]'"
if [[ "$skip_install" == 1 ]]; then
  install=''
fi

remote="set -euo pipefail
$install
$workdir_setup
mkdir -p \"\$workdir\"
cd \"\$HOME/nrnp\"
echo \"\$(hostname): nrnp -> \$workdir\"
exec $venv/bin/python -m nrnp.main --config=$(q "$config") --workdir=\"\$workdir\"$overrides"

set -x
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" --worker=all \
  --command="bash -c $(q "$remote")"
