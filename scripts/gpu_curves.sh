#!/usr/bin/env bash
# Short CIFAR-10 learning-curve grid on one GPU (grids/cifar10-curves-gpu.yaml: bf16,
# channels_last, batch 256, 4 schemes x 20 epochs), meant to finish in under 10 minutes.
#
#   scripts/gpu_curves.sh CIFAR10 [KEY=VALUE ...] [--out DIR] [--dry-run]
#
# CIFAR10: a class-folder tree (train/<class>/*.jpg, test/<class>/*.jpg) or the .tar.gz holding
# one (unpacked once into ${ADIOS_SCRATCH:-/tmp}/adios-cifar10). Everything after it goes to
# `adios compare` (overrides win over the grid's). Interrupted, it resumes where it stopped.
# PYTHON picks the interpreter (default: python). A CPU check at a tiny size:
#   scripts/gpu_curves.sh DIR train.device=cpu train.precision=fp32 train.channels_last=false \
#       data.num_train=64 data.num_val=32 data.num_test=32 model.width=4 --out /tmp/gpu-check
set -euo pipefail
if [[ $# -lt 1 ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
data=$1
shift
if [[ -f $data && $data == *.tar.gz ]]; then
    target=${ADIOS_SCRATCH:-/tmp}/adios-cifar10
    if [[ ! -d $target/train ]]; then
        mkdir -p "$target"
        tar xzf "$data" -C "$target"
    fi
    data=$target
fi
if [[ ! -d $data/train || ! -d $data/test ]]; then
    echo "gpu_curves.sh: $data has no train/ and test/ class folders" >&2
    exit 2
fi
started=$(date +%s)
cd "$root"
"${PYTHON:-python}" -m adios.cli compare grids/cifar10-curves-gpu.yaml "data.path=$data" "$@"
echo "gpu_curves.sh: $(($(date +%s) - started)) s"
