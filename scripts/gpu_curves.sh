#!/usr/bin/env bash
# Short CIFAR-10 learning-curve grid on one GPU (grids/cifar10-curves-gpu.yaml: bf16,
# channels_last, batch 256, 4 schemes x 20 epochs), meant to finish in under 10 minutes.
#
#   scripts/gpu_curves.sh CIFAR10 [KEY=VALUE ...] [--out DIR] [--dry-run]
#
# CIFAR10: a class-folder tree (train/<class>/*.jpg, test/<class>/*.jpg) or a .tar.gz, .tgz or
# .tar holding one, at its top or in one folder (unpacked once, completely, into
# ${ADIOS_SCRATCH:-/tmp}/adios-cifar10; a partial unpacking is redone). Everything after it goes to
# `adios compare` (overrides win over the grid's). Interrupted, it resumes where it stopped.
# PYTHON picks the interpreter (default: python). A CPU check at a tiny size:
#   scripts/gpu_curves.sh DIR train.device=cpu train.precision=fp32 train.channels_last=false \
#       data.num_train=64 data.num_val=32 data.num_test=32 model.width=4 --out /tmp/gpu-check
set -euo pipefail
if [[ $# -lt 1 ]]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
data=$1
shift
source "$root/scripts/unpack_splits.sh"
data=$(unpack_splits "$data" cifar10) || exit 2
started=$(date +%s)
cd "$root"
"${PYTHON:-python}" -m adios.cli compare grids/cifar10-curves-gpu.yaml "data.path=$data" "$@"
echo "gpu_curves.sh: $(($(date +%s) - started)) s"
